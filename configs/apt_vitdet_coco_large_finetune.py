# The authors' APT recipe on EVA-02-L: the released eva02_L_coco_sys.pth
# (converted, docs/reproduce.md) fine-tuned with APT (2, 2, 0.3) for 5% of
# the baseline's iterations (3k of 60k) at one tenth of its learning rate.
#   python tools/model_converters/eva02_det_to_mmapt.py eva02_L_coco_sys.pth \
#       checkpoints/eva02_L_coco_sys_mmapt.pth
#   bash tools/dist_train.sh configs/apt_vitdet_coco_large_finetune.py 8
_base_ = ['./apt_vitdet_coco_large.py']
load_from = 'checkpoints/eva02_L_coco_sys_mmapt.pth'
model = dict(backbone=dict(init_cfg=None))
max_iters = 3000
train_cfg = dict(max_iters=max_iters, val_interval=1000)
param_scheduler = [dict(_base_.param_scheduler[0], end=100)]
optim_wrapper = dict(optimizer=dict(lr=5e-6))
default_hooks = dict(checkpoint=dict(interval=1000))
