# APT-DINOv2-B + UperNet on ADE20K: the baseline of dinov2_upernet_ade20k.py
# with adaptive patches 14 and 28 and the APT paper's segmentation threshold
# 5.75 (as configs/apt_upernet_ade20k.py). Crops, slide windows and the test
# padding (504) are multiples of the largest patch (28).
#   bash tools/dist_train.sh configs/apt_dinov2_upernet_ade20k.py 8
_base_ = ['./dinov2_upernet_ade20k.py']
custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)
model = dict(
    backbone=dict(
        type='APTViT',
        thresholds=(5.75, ),
        patch_sizes=(14, 28),
        entropy_bins=512,
        # Must equal the data preprocessor's mean/std.
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375]))
custom_hooks = [dict(type='TokenStatsHook')]
