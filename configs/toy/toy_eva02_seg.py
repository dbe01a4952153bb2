# Toy baseline: plain EVA-02-tiny + UperNet on the synthetic ADE20K-layout set
# made by tools/misc/make_toy_ade.py (6 classes, 0 = ignore), trained from
# scratch on a CPU in minutes. Same recipe shape as eva02_upernet_ade20k.py:
# global attention, 4 taps -> ViTPyramidNeck -> UPerHead + FCN aux head, slide
# inference. Heads use GN and the neck LN2d so that one-process and gloo
# (CPU DDP) runs work. From scratch, the toy keeps its own choices where the
# ADE20K configs follow the released EVA-02 segmentors (class token, SyncBN
# neck, ImageNet statistics): the toy results in docs/segmentation.md were
# measured with these settings.
#
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_eva02_seg.py
_base_ = [
    '../_base_/models/upernet_eva02.py',
    '../_base_/seg_default_runtime.py',
    '../_base_/default_hooks.py',
]

# ----------------------------------------------------------------- data
dataset_type = 'BaseSegDataset'
data_root = 'data/toy_ade'
metainfo = dict(
    classes=('wall', 'floor', 'painting', 'rug', 'lamp', 'plant'),
    palette=[[120, 120, 120], [80, 50, 50], [255, 6, 51], [255, 9, 92],
             [224, 5, 255], [4, 200, 3]])
crop_size = (256, 256)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomResize',
        scale=(512, 256),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 256), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
toy_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **toy_dataset,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **toy_dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---------------------------------------------------------------- model
norm_cfg = dict(type='GN', num_groups=8, requires_grad=True)
clip_mean = [122.7709383, 116.7460125, 104.09373615]
clip_std = [68.5005327, 66.6321579, 70.32316305]
model = dict(
    data_preprocessor=dict(
        mean=clip_mean,
        std=clip_std,
        size=crop_size,
        test_cfg=dict(size=crop_size)),
    backbone=dict(
        arch='tiny',
        img_size=crop_size[0],
        drop_path_rate=0.0,
        use_cls_token=False,
        pos_embed_grid=None,  # the pre-training grid, 16 x 16
        init_cfg=None),  # from scratch: no weights are needed
    neck=dict(embed_dim=192, norm_cfg=dict(type='LN2d', eps=1e-6)),
    decode_head=dict(
        in_channels=[192, 192, 192, 192],
        channels=32,
        num_classes=6,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=192, channels=32, num_classes=6, norm_cfg=norm_cfg),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(171, 171)))
# The APT twin (toy_apt_seg.py) un-normalises with these statistics.
apt_backbone = dict(mean=clip_mean, std=clip_std)

# ------------------------------------------------------------- schedule
max_iters = 300
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    # From scratch: no layer decay. The heads are narrow (32 channels) and
    # must learn within 300 iterations, hence 10x their learning rate
    # (without it only wall and floor are learnt in that time).
    paramwise_cfg=dict(
        layer_decay_rate=1.0,
        custom_keys=dict(
            decode_head=dict(lr_mult=10.0),
            auxiliary_head=dict(lr_mult=10.0))),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=30,
        end=max_iters),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Logs every 5 iterations (a CPU run shows progress within a minute), one
# checkpoint at the end.
default_hooks = dict(
    logger=dict(interval=5),
    checkpoint=dict(interval=max_iters),
    visualization=dict(type='SegVisualizationHook'))
custom_hooks = [dict(type='TokenStatsHook')]
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
