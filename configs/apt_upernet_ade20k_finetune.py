# The APT authors' recipe for dense models: start from a trained baseline
# segmentor (the released EVA-02-B UperNet, converted; or your own run of
# eva02_upernet_ade20k.py) and fine-tune it with APT for 5% of the
# iterations (60k -> 3k) at a tenth of the learning rate (6e-5 -> 6e-6);
# the warm-up shrinks by the same 5% (1500 -> 75 iterations).
#
# The APT-only parameters (zero-initialised aggregation) are missing from the
# baseline checkpoint and keep their zero init, so the model starts exactly as
# "embed the resized patch" (mmengine loads `load_from` non-strictly).
_base_ = ['./apt_upernet_ade20k.py']
# Produced by (docs/reproduce.md):
#   python tools/model_converters/eva02_seg_to_mmapt.py \
#       eva02_B_ade_seg_upernet_sz512.pth \
#       checkpoints/eva02_B_ade_seg_upernet_sz512_mmapt.pth
# or use your own baseline: --cfg-options \
#   load_from=work_dirs/eva02_upernet_ade20k/iter_60000.pth
load_from = 'checkpoints/eva02_B_ade_seg_upernet_sz512_mmapt.pth'
# The whole segmentor comes from `load_from`; no separate backbone init.
model = dict(backbone=dict(init_cfg=None))
# The APT-only layers (apt_embed.*, zero-initialised) get the full 6e-6, not
# layer decay's 0.85**13 x 6e-6 (as in the official APT code).
optim_wrapper = dict(
    optimizer=dict(lr=6e-6), paramwise_cfg=dict(apt_lr_mult=1.0))
param_scheduler = [
    dict(_base_.param_scheduler[0], end=75),
    dict(_base_.param_scheduler[1], begin=75, end=3000),
]
train_cfg = dict(max_iters=3000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
