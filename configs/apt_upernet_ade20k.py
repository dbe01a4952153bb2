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
model = dict(
    backbone=dict(
        type='APTEVA02',
        thresholds=(5.75, ),
        patch_sizes=(16, 32),
        entropy_bins=512,
        # The data preprocessor's mean/std (the tokenizer un-normalises the
        # images to score entropy on 0-255 grey levels).
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std))
custom_hooks = [dict(type='TokenStatsHook')]
