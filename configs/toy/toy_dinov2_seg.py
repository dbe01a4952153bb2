# Toy baseline for the DINOv2 family: configs/toy/toy_eva02_seg.py (same
# data, heads, schedule and seed) with a DINOv2-tiny-style ViT trained from
# scratch: patch 14, class + 4 register tokens, LayerScale, global
# attention, ImageNet statistics. 224 x 224 crops and slide windows (a
# multiple of 14 and of APT's largest segmentation patch, 28).
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_dinov2_seg.py
_base_ = ['./toy_eva02_seg.py']

crop_size = (224, 224)
model = dict(
    data_preprocessor=dict(
        mean=_base_.imagenet_mean,
        std=_base_.imagenet_std,
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
# The APT twin (toy_apt_dinov2_seg.py): patches 14 and 28, with this
# preprocessor's statistics.
apt_backbone = dict(
    type='APTViT',
    patch_sizes=(14, 28),
    mean=_base_.imagenet_mean,
    std=_base_.imagenet_std)

# The toy pipelines at 224 (lists: see _base_/default_runtime.py).
train_pipeline = [dict(step) for step in _base_.train_pipeline]
train_pipeline[2].update(scale=(448, 224))  # RandomResize
train_pipeline[3].update(crop_size=crop_size)  # RandomCrop
test_pipeline = [dict(step) for step in _base_.test_pipeline]
test_pipeline[1].update(scale=(448, 224))  # Resize
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
