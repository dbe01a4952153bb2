# Baseline: plain EVA-02-L + ViTDet Cascade Mask R-CNN on COCO at 1536:
# 24 blocks, global blocks 2, 5, ..., 23 (0-based), drop path 0.4, layer
# decay 0.8 (docs/method.md, section 6). Backbone weights:
# checkpoints/eva02_L_pt_m38m_p16_mmapt.pth (docs/detection.md).
_base_ = ['./eva02_vitdet_coco.py']
model = dict(
    backbone=dict(
        arch='large',
        global_attn_indexes=(2, 5, 8, 11, 14, 17, 20, 23),
        drop_path_rate=0.4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/eva02_L_pt_m38m_p16_mmapt.pth')),
    neck=dict(backbone_channel=1024, in_channels=[256, 512, 1024, 1024]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
