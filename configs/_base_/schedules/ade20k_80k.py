# EVA-02-L UperNet schedule: AdamW lr 4e-5, wd 0.05, layer-wise lr decay 0.9,
# 1500 warm-up iterations then poly decay, 80k iterations at batch 16.
_base_ = './ade20k_60k.py'
optim_wrapper = dict(
    optimizer=dict(lr=4e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=1500,
        end=80000),
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
auto_scale_lr = dict(base_batch_size=16)
