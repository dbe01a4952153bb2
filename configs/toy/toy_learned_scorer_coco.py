# Label-free training of the `learned` patch scorer on the toy detection set:
# the frozen APT-EVA02-tiny of configs/toy/toy_apt_det.py (the plain toy
# detector's weights) teaches a ScorerNet how far merging each patch moves
# its output features (mmapt/models/distillers/scorer_distiller.py). Only the
# training images are read (no annotations); evaluation uses the val images.
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_eva02_det.py
#   python tools/train.py configs/toy/toy_learned_scorer_coco.py
# (another detector: --cfg-options model.backbone.init_cfg.checkpoint=PATH)
# then use it: model.backbone.scorer=dict(type='learned',
#   checkpoint='work_dirs/toy_learned_scorer_coco/iter_400.pth')
_base_ = ['./toy_apt_det.py']

detector_checkpoint = 'work_dirs/toy_eva02_det/iter_300.pth'
max_iters = 400

model = dict(
    _delete_=True,
    type='ScorerDistiller',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std,
        bgr_to_rgb=True,
        # The detector's 256 x 256 canvas, padded with the mean colour.
        pad_size_divisor=_base_.image_size[0]),
    backbone=dict(
        _base_.model.backbone,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=detector_checkpoint,
            prefix='backbone.')),
    scorer=dict(channels=32))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=_base_.image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor', 'flip', 'flip_direction')),
]
train_dataloader = dict(
    batch_size=4,
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
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0, norm_type=2),
    # The contrast prior's scale and offset per patch size start at (1, -4)
    # and must reach the log-drift range (about -5 to 0) within the
    # schedule: a larger step for these few scalars, no weight decay.
    paramwise_cfg=dict(
        custom_keys={'scorer.prior_': dict(lr_mult=25., decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=20,
        end=max_iters,
        eta_min=1e-5)
]
default_hooks = dict(checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
custom_hooks = []
