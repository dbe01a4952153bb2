# Baseline: plain DINOv2-B (with 4 registers) + ViTDet Cascade Mask R-CNN on
# COCO 2017 instances: the EVA-02-B recipe of eva02_vitdet_coco.py (LSJ
# 0.1-2.0, 60k iterations at batch 128, AdamW lr 5e-5, wd 0.1, layer decay
# 0.7, drop path 0.1, global blocks 1, 3, 5, 7, 9, 11, soft-NMS) on the
# DINOv2 family (patch 14, ImageNet statistics).
#
# Canvas 1568 = 14 x 112: a multiple of APT's largest patch (112 px = 8
# cells) and of the window. Windows are 16 cells (224 px): the window must
# be a multiple of 8 cells and divide the 112-cell grid (16 or 56), and 16
# keeps windows near ViTDet-B's 14 cells.
#
# Needs data/coco/ and checkpoints/dinov2_vitb14_reg4_mmapt.pth, made from
# the official dinov2_vitb14_reg4_pretrain.pth (or timm's
# vit_base_patch14_reg4_dinov2) by
#   python tools/model_converters/vit_to_mmapt.py SRC \
#       checkpoints/dinov2_vitb14_reg4_mmapt.pth
#   bash tools/dist_train.sh configs/dinov2_vitdet_coco.py 8 --auto-scale-lr
_base_ = ['./eva02_vitdet_coco.py']

canvas_size = (1568, 1568)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=canvas_size[0],
        batch_augments=[
            dict(type='BatchFixedSizePad', size=canvas_size, pad_mask=True)
        ]),
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='base',
        img_size=canvas_size[0],
        patch_size=14,
        window_size=16,
        global_attn_indexes=(1, 3, 5, 7, 9, 11),
        out_indices=(-1, ),
        drop_path_rate=0.1,
        pretrain_img_size=518,
        pretrain_patch_size=14,
        use_cls_token=True,
        num_register_tokens=4,
        layer_scale=True,
        # Inputs smaller than the canvas (padding-free inference) keep the
        # positions they have on the canvas.
        position_grid='nominal',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/dinov2_vitb14_reg4_mmapt.pth')))
# The APT twin (apt_dinov2_vitdet_coco.py): patches 14/28/56/112, the
# detection thresholds of the base.
apt_backbone = dict(type='APTViT', patch_sizes=(14, 28, 56, 112))

# The base's train pipeline with the 1568 canvas (lists: see
# _base_/default_runtime.py).
train_pipeline = [dict(step) for step in _base_.train_pipeline]
train_pipeline[3].update(scale=canvas_size)  # RandomResize
train_pipeline[4].update(crop_size=canvas_size)  # RandomCrop
# Test images are read and resized with cv2, not with the base's Pillow
# reader (which follows the released EVA-02 detectors).
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=canvas_size, keep_ratio=True),
    *_base_.test_pipeline[2:],
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
