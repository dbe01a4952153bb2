# Label-free training of the `learned` patch scorer on the toy segmentation
# set: the frozen APT-EVA02-tiny of configs/toy/toy_apt_seg.py (patches 16/32,
# the plain toy segmentor's weights) teaches a ScorerNet how far merging each
# 32-px patch moves its output features. Reads the training images only.
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_eva02_seg.py
#   python tools/train.py configs/toy/toy_learned_scorer_ade.py
# (another segmentor: --cfg-options model.backbone.init_cfg.checkpoint=PATH)
# then use it: model.backbone.scorer=dict(type='learned', patch_sizes=(32, ),
#   checkpoint='work_dirs/toy_learned_scorer_ade/iter_400.pth')
_base_ = ['./toy_apt_seg.py']

segmentor_checkpoint = 'work_dirs/toy_eva02_seg/iter_300.pth'
max_iters = 400

model = dict(
    _delete_=True,
    type='ScorerDistiller',
    # The segmentor's own: normalisation, padding to the 256 x 256 crop.
    data_preprocessor=_base_.model.data_preprocessor,
    backbone=dict(
        _base_.model.backbone,
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
