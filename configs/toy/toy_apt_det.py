# Toy APT: configs/toy/toy_eva02_det.py with adaptive patches 16/32/64/128 and
# the paper's detection thresholds (2, 2, 0.3): same data, iterations and seed.
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_apt_det.py
_base_ = ['./toy_eva02_det.py']
model = dict(backbone=_base_.apt_backbone)
