# EVA-02-B ViTDet schedule: AdamW lr 5e-5, wd 0.1, layer-wise lr decay 0.7,
# AMP, 60k iterations at batch 128 (64 GPUs x 2). 250 warm-up iterations and
# x0.1 steps at 88.9% and 96.3% of training (ViTDet's step ratios).
# `tools/train.py --auto-scale-lr` rescales lr to another total batch size.
max_iters = 60000
val_interval = 5000
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(
        type='MultiStepLR',
        by_epoch=False,
        begin=0,
        end=max_iters,
        milestones=[53333, 57778],
        gamma=0.1)
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7),
    optimizer=dict(
        type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=0.1))
auto_scale_lr = dict(enable=False, base_batch_size=128)
