# Toy baseline for the DINOv2 family: configs/toy/toy_eva02_det.py (same
# data, heads, schedule and seed) with a DINOv2-tiny-style ViT trained from
# scratch: patch 14, class + 4 register tokens, LayerScale, GELU MLP,
# absolute positions only. Canvas 224 = 2 x 112 (APT's largest patch) with
# 8-cell windows (112 px) and global blocks every third block.
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_dinov2_det.py
_base_ = ['./toy_eva02_det.py']

image_size = (224, 224)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],
        batch_augments=[
            dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
        ]),
    backbone=dict(
        _delete_=True,
        type='ViT',
        arch='tiny',
        img_size=image_size[0],
        patch_size=14,
        window_size=8,
        global_attn_indexes=(2, 5, 8, 11),
        out_indices=(-1, ),
        drop_path_rate=0.0,
        pretrain_img_size=image_size[0],
        pretrain_patch_size=14,
        use_cls_token=True,
        num_register_tokens=4,
        layer_scale=True,
        position_grid='nominal',
        init_cfg=None))  # trained from scratch
# The APT twin (toy_apt_dinov2_det.py): patches 14/28/56/112.
apt_backbone = dict(type='APTViT', patch_sizes=(14, 28, 56, 112))

# The toy pipelines at 224 (lists: see _base_/default_runtime.py).
train_pipeline = [dict(step) for step in _base_.train_pipeline]
train_pipeline[2].update(scale=image_size)  # Resize
test_pipeline = [dict(step) for step in _base_.test_pipeline]
test_pipeline[1].update(scale=image_size)  # Resize
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
