# Toy APT for the DINOv2 family: configs/toy/toy_dinov2_seg.py with adaptive
# patches 14 and 28 and the segmentation threshold 5.75.
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_apt_dinov2_seg.py
_base_ = ['./toy_dinov2_seg.py']
model = dict(
    backbone=dict(
        type='APTViT',
        thresholds=(5.75, ),
        patch_sizes=(14, 28),
        entropy_bins=512,
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std))
