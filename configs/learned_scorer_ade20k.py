# Label-free training of the `learned` patch scorer for APT-EVA02-B on
# ADE20K (512 x 512 crops, patches 16/32): the frozen APT backbone of
# configs/apt_upernet_ade20k.py with your trained segmentor's weights teaches
# the scorer network how far merging each 32-px patch moves its output
# features (mmapt/models/distillers/scorer_distiller.py). Reads the training
# images only (no annotations).
#   D=work_dirs/eva02_upernet_ade20k/iter_60000.pth
#   python tools/train.py configs/learned_scorer_ade20k.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=$D
# then segment with it: model.backbone.scorer=dict(type='learned',
#   patch_sizes=(32, ),
#   checkpoint='work_dirs/learned_scorer_ade20k/iter_5000.pth')
_base_ = ['./apt_upernet_ade20k.py']

segmentor_checkpoint = 'work_dirs/eva02_upernet_ade20k/iter_60000.pth'
max_iters = 5000

model = dict(
    _delete_=True,
    type='ScorerDistiller',
    # The segmentor's own: normalisation, padding to the crop.
    data_preprocessor=_base_.model.data_preprocessor,
    backbone=dict(
        _base_.model.backbone,
        drop_path_rate=0.0,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=segmentor_checkpoint,
            prefix='backbone.')),
    scorer=dict(channels=32))

# The views the segmentor's backbone sees at test time: the test pipeline's
# resize (no random rescaling), then crops of the slide window's size.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    _base_.test_pipeline[1],  # Resize
    dict(type='RandomCrop', crop_size=_base_.crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
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
