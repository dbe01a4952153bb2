# APT-EVA02-L + UperNet on ADE20K, 512 x 512 (the paper's setting: patch
# sizes 16/32, threshold 5.75; see apt_upernet_ade20k.py for the choice).
# Published: 59.70 mIoU vs 59.77 for the baseline, +11% img/s.
_base_ = ['./eva02_upernet_ade20k_large_512.py']
model = dict(backbone=_base_.apt_backbone)
custom_hooks = [dict(type='TokenStatsHook')]
