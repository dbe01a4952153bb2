# COCO 2017 instances at 1536 x 1536 with large-scale jitter (ViTDet / EVA-02):
# train: random flip, resize to 0.1-2.0 x 1536 (keep ratio), random crop
# 1536, pad 1536 (BatchFixedSizePad in the model's data preprocessor);
# test: resize the long side to 1536, pad to 1536 x 1536. The padding is done
# by the model's data preprocessor (pad_size_divisor=1536 turns every input
# whose long side is at most 1536 into a 1536 x 1536 canvas, in training and
# at test) with the mean colour, 0 after normalisation: a constant region
# that APT covers with its largest patches. (A Pad transform in the pipeline
# would change img_shape to the padded size, and mmdet would then keep boxes
# that lie in the padding.)
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
image_size = (1536, 1536)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomResize',
        scale=image_size,
        ratio_range=(0.1, 2.0),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='PackDetInputs'),
]
# Test images are decoded and resized with Pillow (bilinear), as detectron2's
# reader and ResizeShortestEdge do for the released models.
test_pipeline = [
    dict(
        type='LoadImageFromFile',
        imdecode_backend='pillow',
        backend_args=backend_args),
    dict(
        type='Resize',
        scale=image_size,
        keep_ratio=True,
        backend='pillow',
        interpolation='bilinear'),
    # Ground truth is not needed by CocoMetric (it reads ann_file); drop this
    # line to test on images without annotations.
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    # AP with at most 100 detections per image and class, as detectron2's
    # evaluator (mmdet's default reports it at 1000, which an uncapped
    # soft-NMS would inflate).
    proposal_nums=(1, 10, 100),
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
