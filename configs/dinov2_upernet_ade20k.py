# Baseline: plain DINOv2-B (with 4 registers) + UperNet on ADE20K: the
# EVA-02-B recipe of eva02_upernet_ade20k.py (global attention, taps 3, 5, 7,
# 11 -> ViTPyramidNeck -> UPerHead + FCN aux head, AdamW lr 6e-5, layer decay
# 0.85, 60k iterations at batch 32, slide inference) on the DINOv2 family:
# patch 14, ImageNet statistics, 504 x 504 crops (512 is not a multiple of
# 14; 504 = 18 x 28 is also one of APT's largest patch, 28 px) and slide
# windows of 504 with stride 336 (2/3, like 341 of 512).
#
# Needs data/ade/ and checkpoints/dinov2_vitb14_reg4_mmapt.pth (see
# configs/dinov2_vitdet_coco.py for the conversion).
#   bash tools/dist_train.sh configs/dinov2_upernet_ade20k.py 8
_base_ = ['./eva02_upernet_ade20k.py']

crop_size = (504, 504)
# The base's ImageNet statistics.
model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size=crop_size)),
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='base',
        img_size=crop_size[0],
        patch_size=14,
        window_size=0,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.15,
        pretrain_img_size=518,
        pretrain_patch_size=14,
        use_cls_token=True,
        num_register_tokens=4,
        layer_scale=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='checkpoints/dinov2_vitb14_reg4_mmapt.pth')),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(336, 336)))
# The APT twin (apt_dinov2_upernet_ade20k.py): patches 14 and 28, the
# segmentation threshold 5.75 of the base.
apt_backbone = dict(type='APTViT', patch_sizes=(14, 28))

# The base's train pipeline with 504 crops (lists: see
# _base_/default_runtime.py).
train_pipeline = [dict(step) for step in _base_.train_pipeline]
train_pipeline[3].update(crop_size=crop_size)  # RandomCrop
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
