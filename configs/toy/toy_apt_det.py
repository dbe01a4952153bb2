# Toy APT: configs/toy/toy_eva02_det.py with adaptive patches 16/32/64/128 and
# the paper's detection thresholds (2, 2, 0.3): same data, iterations and seed.
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_apt_det.py
_base_ = ['./toy_eva02_det.py']
model = dict(
    backbone=dict(
        type='APTEVA02',
        thresholds=(2.0, 2.0, 0.3),
        patch_sizes=(16, 32, 64, 128),
        entropy_bins=512,
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std))
