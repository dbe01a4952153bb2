# EVA-02-L ViTDet Cascade Mask R-CNN on COCO at 1024 x 1024: the architecture
# of the released eva02_L_coco_bsl.pth (16-token windows, global blocks 5,
# 11, 17, 23) with detectron2's default test rules (59.2 box / 50.8 mask AP).
#   python tools/model_converters/eva02_det_to_mmapt.py eva02_L_coco_bsl.pth \
#       checkpoints/eva02_L_coco_bsl_mmapt.pth
#   python tools/test.py configs/eva02_vitdet_coco_large_1024.py \
#       checkpoints/eva02_L_coco_bsl_mmapt.pth
_base_ = ['./eva02_vitdet_coco_1024.py']
model = dict(
    backbone=dict(
        arch='large',
        global_attn_indexes=(5, 11, 17, 23),
        drop_path_rate=0.4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/eva02_L_pt_m38m_p16_mmapt.pth')),
    neck=dict(backbone_channel=1024, in_channels=[256, 512, 1024, 1024]))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
