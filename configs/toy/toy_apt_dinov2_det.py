# Toy APT for the DINOv2 family: configs/toy/toy_dinov2_det.py with adaptive
# patches 14/28/56/112 and the paper's detection thresholds (2, 2, 0.3).
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_apt_dinov2_det.py
_base_ = ['./toy_dinov2_det.py']
model = dict(backbone=_base_.apt_backbone)
