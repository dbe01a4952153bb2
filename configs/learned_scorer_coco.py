# Label-free training of the `learned` patch scorer for APT-EVA02-B on COCO
# at 1536: the frozen APT backbone of configs/apt_vitdet_coco.py, with the
# weights of your trained detector (plain or APT-fine-tuned), teaches the
# scorer network how far merging each patch moves its output features
# (mmapt/models/distillers/scorer_distiller.py). Reads the train2017 images
# only (no annotations). Each iteration runs the frozen backbone 7 times
# without gradients (plain, then two checkerboards per patch size above the
# base) and trains only the small scorer.
#   D=work_dirs/eva02_vitdet_coco/iter_60000.pth
#   python tools/train.py configs/learned_scorer_coco.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=$D
# then detect with it:
#   model.backbone.scorer=dict(type='learned',
#       checkpoint='work_dirs/learned_scorer_coco/iter_5000.pth')
# (configs/apt_vitdet_coco_learned.py) and calibrate thresholds or a keep
# ratio as for any scorer (docs/tokenizer.md).
_base_ = ['./apt_vitdet_coco.py']

detector_checkpoint = 'checkpoints/eva02_B_coco_sys_mmapt.pth'
max_iters = 5000

model = dict(
    _delete_=True,
    type='ScorerDistiller',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std,
        bgr_to_rgb=True,
        # The detector's square canvas, padded with the mean colour.
        pad_size_divisor=_base_.image_size[0]),
    backbone=dict(
        _base_.model.backbone,
        drop_path_rate=0.0,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=detector_checkpoint,
            prefix='backbone.')),
    scorer=dict(channels=32))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=_base_.image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor', 'flip', 'flip_direction')),
]
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        filter_cfg=dict(filter_empty_gt=False), pipeline=train_pipeline))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    # The contrast prior's scale and offset per patch size start at (1, -4)
    # and must reach the log-drift range (about -5 to 0) within the
    # schedule: a larger step for these few scalars, no weight decay.
    paramwise_cfg=dict(
        custom_keys={'scorer.prior_': dict(lr_mult=25., decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=200),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=200,
        end=max_iters,
        eta_min=1e-5)
]
default_hooks = dict(
    logger=dict(interval=50), checkpoint=dict(interval=1000, max_keep_ckpts=2))
custom_hooks = []
