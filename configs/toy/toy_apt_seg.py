# Toy APT: toy_eva02_seg.py with the adaptive backbone, same thresholds as
# configs/apt_upernet_ade20k.py (patch sizes 16/32, threshold 5.75). The
# 256 x 256 crops and slide windows are multiples of the largest patch (32).
#
#   python tools/misc/make_toy_ade.py data/toy_ade
#   python tools/train.py configs/toy/toy_apt_seg.py
_base_ = ['./toy_eva02_seg.py']
model = dict(backbone=_base_.apt_backbone)
