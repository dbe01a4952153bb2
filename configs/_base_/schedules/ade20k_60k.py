# EVA-02-B UperNet schedule: AdamW lr 6e-5, wd 0.05, layer-wise lr decay 0.85,
# 1500 linear warm-up iterations then poly decay, 60k iterations at batch 32.
_base_ = '../default_hooks.py'
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.85))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=1500,
        end=60000),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=60000, val_interval=6000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# A checkpoint every 6000 iterations, the last 2 and the best mIoU kept.
default_hooks = dict(
    checkpoint=dict(interval=6000, max_keep_ckpts=2, save_best='mIoU'),
    visualization=dict(type='SegVisualizationHook'))
# The recipe's total batch; `tools/train.py --auto-scale-lr` rescales lr.
auto_scale_lr = dict(enable=False, base_batch_size=32)
