# Toy baseline for the DINOv2 family: configs/toy/toy_eva02_seg.py (same
# data, heads, schedule and seed) with a DINOv2-tiny-style ViT trained from
# scratch: patch 14, class + 4 register tokens, LayerScale, global
# attention, ImageNet statistics. 224 x 224 crops and slide windows (a
# multiple of 14 and of APT's largest segmentation patch, 28).
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_dinov2_seg.py
_base_ = ['./toy_eva02_seg.py']
custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)

crop_size = (224, 224)
model = dict(
    data_preprocessor=dict(
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        size=crop_size,
        test_cfg=dict(size=crop_size)),
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='tiny',
        img_size=crop_size[0],
        patch_size=14,
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.0,
        pretrain_img_size=crop_size[0],
        pretrain_patch_size=14,
        use_cls_token=True,
        num_register_tokens=4,
        layer_scale=True,
        init_cfg=None),  # from scratch: no weights are needed
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(154, 154)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(448, 224),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(448, 224), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
