# Toy baseline: plain EVA-02-tiny + ViTDet Cascade Mask R-CNN trained from
# scratch on the toy COCO set of tools/misc/make_toy_coco.py (textured shapes,
# 4 classes), 256 x 256 canvas, on CPU in minutes. Same structure as
# configs/eva02_vitdet_coco.py (windowed + global blocks, SimpleFPN, 3 cascade
# stages with LN heads, mask head, CocoMetric bbox + segm), scaled down: tiny
# backbone (192 channels), 32-channel neck and heads, fewer sampled RoIs and
# proposals, RoIAlign with 2 x 2 samples per bin. The toy results in
# docs/detection.md were measured with mmdet's own cascade rules, which this
# config keeps (logit averaging, a mask head per stage, mmdet's RoI levels,
# a 16 x 16 position table, capped soft-NMS) instead of the released models'
# detectron2 rules of the COCO configs.
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_eva02_det.py
_base_ = ['../eva02_vitdet_coco.py']

data_root = 'data/toy_coco/'
image_size = (256, 256)
classes = ('circle', 'square', 'triangle', 'star')
metainfo = dict(
    classes=classes,
    palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 180, 0)])
num_classes = len(classes)
channels = 32
norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)

model = dict(
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],
        batch_augments=[
            dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
        ]),
    backbone=dict(
        arch='tiny',
        img_size=image_size[0],
        # 8-token windows (128 px, a multiple of APT's largest patch) and
        # global blocks every third block, like the ViTDet layout.
        window_size=8,
        global_attn_indexes=(2, 5, 8, 11),
        drop_path_rate=0.0,
        pos_embed_grid=None,
        init_cfg=None),  # no pretrained weights: trained from scratch
    neck=dict(
        backbone_channel=192,
        in_channels=[48, 96, 192, 192],
        out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        score_average='logits',
        shared_mask_head=False,
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            out_channels=channels,
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2)),
        # The base's three cascade heads, narrowed (lists: see
        # _base_/default_runtime.py); mmdet's rounded stds.
        bbox_head=[
            dict(
                head,
                in_channels=channels,
                conv_out_channels=channels,
                fc_out_channels=256,
                num_classes=num_classes,
                bbox_coder=dict(head.bbox_coder, target_stds=stds))
            for head, stds in zip(_base_.model.roi_head.bbox_head, (
                [0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                [0.033, 0.033, 0.067, 0.067]))
        ],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            out_channels=channels,
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=2)),
        mask_head=dict(
            in_channels=channels,
            conv_out_channels=channels,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        # The base's three stages with 64 sampled RoIs each.
        rcnn=[
            dict(stage, sampler=dict(stage.sampler, num=64))
            for stage in _base_.model.train_cfg.rcnn
        ]),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='soft_nms', iou_threshold=0.5, min_score=0.05),
            max_per_img=50,
            maskness_thr=None)))

# Padding to the 256 x 256 canvas is done by the data preprocessor, with the
# mean colour: a constant region, as at 1536.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
# Test images are read and resized with cv2 (the base's Pillow reader and
# bilinear resize follow the released EVA-02 detectors); the annotations and
# packing are the base's.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    *_base_.test_pipeline[2:],
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[int(max_iters * 0.8)],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    _delete_=True,
    constructor='LayerDecayOptimWrapperConstructor',
    # Trained from scratch: no decay across layers (the constructor still
    # keeps weight decay off norms, biases and position embeddings).
    paramwise_cfg=dict(layer_decay_rate=1.0),
    optimizer=dict(
        type='AdamW', lr=4e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=1.0, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    # Every 5 iterations: a CPU run shows progress within a minute.
    logger=dict(interval=5),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
