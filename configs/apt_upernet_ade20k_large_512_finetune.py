# The APT authors' recipe on the released EVA-02-L UperNet (512 crops):
# fine-tune the converted baseline with APT for 5% of its iterations
# (80k -> 4k) at a tenth of the learning rate (4e-5 -> 4e-6); the warm-up
# shrinks by the same 5% (1500 -> 75 iterations). The APT-only parameters
# are missing from the baseline checkpoint and keep their zero init, so the
# model starts exactly as "embed the resized patch".
_base_ = ['./apt_upernet_ade20k_large_512.py']
# Produced by (docs/reproduce.md):
#   python tools/model_converters/eva02_seg_to_mmapt.py \
#       eva02_L_ade_seg_upernet_sz512.pth \
#       checkpoints/eva02_L_ade_seg_upernet_sz512_mmapt.pth
load_from = 'checkpoints/eva02_L_ade_seg_upernet_sz512_mmapt.pth'
# The whole segmentor comes from `load_from`; no separate backbone init.
model = dict(backbone=dict(init_cfg=None))
optim_wrapper = dict(optimizer=dict(lr=4e-6))
param_scheduler = [
    dict(_base_.param_scheduler[0], end=75),
    dict(_base_.param_scheduler[1], begin=75, end=4000),
]
train_cfg = dict(max_iters=4000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
