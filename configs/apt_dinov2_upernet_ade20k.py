# APT-DINOv2-B + UperNet on ADE20K: the baseline of dinov2_upernet_ade20k.py
# with adaptive patches 14 and 28 and the APT paper's segmentation threshold
# 5.75 (as configs/apt_upernet_ade20k.py). Crops, slide windows and the test
# padding (504) are multiples of the largest patch (28).
#   bash tools/dist_train.sh configs/apt_dinov2_upernet_ade20k.py 8
_base_ = ['./dinov2_upernet_ade20k.py']
model = dict(backbone=_base_.apt_backbone)
custom_hooks = [dict(type='TokenStatsHook')]
