# EVA-02-L UperNet schedule: AdamW lr 4e-5, wd 0.05, layer-wise lr decay 0.9,
# 1500 warm-up iterations then poly decay, 80k iterations at batch 16.
_base_ = './ade20k_60k.py'
optim_wrapper = dict(
    optimizer=dict(lr=4e-5), paramwise_cfg=dict(layer_decay_rate=0.9))
# The 60k warm-up and poly decay, the decay ending at 80k.
param_scheduler = [
    _base_.param_scheduler[0],
    dict(_base_.param_scheduler[1], end=80000),
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
auto_scale_lr = dict(base_batch_size=16)
