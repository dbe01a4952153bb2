# Toy APT for the DINOv2 family: configs/toy/toy_dinov2_seg.py with adaptive
# patches 14 and 28 and the segmentation threshold 5.75.
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_apt_dinov2_seg.py
_base_ = ['./toy_dinov2_seg.py']
model = dict(backbone=_base_.apt_backbone)
