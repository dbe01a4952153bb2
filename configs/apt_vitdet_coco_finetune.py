# The authors' APT recipe for dense prediction: start from a fully trained
# baseline detector and fine-tune it with APT for 5% of its iterations (3k of
# 60k) at one tenth of its learning rate (5e-6). The APT embedding's
# zero-initialised aggregation makes the starting point equal to "embed the
# resized patch", so a short schedule suffices.
# The start is the released EVA-02-B detector, converted (docs/reproduce.md):
#   python tools/model_converters/eva02_det_to_mmapt.py eva02_B_coco_sys.pth \
#       checkpoints/eva02_B_coco_sys_mmapt.pth
#   bash tools/dist_train.sh configs/apt_vitdet_coco_finetune.py 8
# or your own baseline (python tools/train.py configs/eva02_vitdet_coco.py):
#   ... --cfg-options load_from=work_dirs/eva02_vitdet_coco/iter_60000.pth
_base_ = ['./apt_vitdet_coco.py']
# All weights come from the trained baseline detector (apt_embed.* start
# from their zero-initialised aggregation).
load_from = 'checkpoints/eva02_B_coco_sys_mmapt.pth'
model = dict(backbone=dict(init_cfg=None))
max_iters = 3000
train_cfg = dict(max_iters=max_iters, val_interval=1000)
# Short warm-up, then a constant lr of 5e-6.
param_scheduler = [dict(_base_.param_scheduler[0], end=100)]
# The APT-only layers (apt_embed.*, zero-initialised, not in the baseline)
# get the full 5e-6, not layer decay's 0.7**13 x 5e-6 = 4.8e-8 of the patch
# embedding they sit next to (as in the official APT code).
optim_wrapper = dict(
    optimizer=dict(lr=5e-6), paramwise_cfg=dict(apt_lr_mult=1.0))
default_hooks = dict(checkpoint=dict(interval=1000))
