# APT-EVA02-B + UperNet on ADE20K, 512 x 512: the baseline of
# eva02_upernet_ade20k.py with adaptive patches.
#
# Patch sizes 16 and 32, entropy threshold 5.75 for the 32-pixel scale: the
# APT paper's segmentation setting is that single threshold (one non-base
# scale). Keeping the largest patch at 32 pixels means a merged token covers
# only 2 x 2 cells of the stride-16 map, so class boundaries move by at most
# one cell, and it keeps every size constraint loose: train crops, slide
# windows (512) and the test padding must be multiples of the largest patch
# (tests/test_configs/test_segmentation_configs.py checks it for every APT
# config).
_base_ = ['./eva02_upernet_ade20k.py']
model = dict(backbone=_base_.apt_backbone)
custom_hooks = [dict(type='TokenStatsHook')]
