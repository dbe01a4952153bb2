# APT-EVA02-L + UperNet on ADE20K, 640 x 640 (patch sizes 16/32, threshold
# 5.75; 640 = 20 x 32). Published: 60.01 mIoU vs 60.05, +11% img/s.
_base_ = ['./eva02_upernet_ade20k_large_640.py']
model = dict(backbone=_base_.apt_backbone)
custom_hooks = [dict(type='TokenStatsHook')]
