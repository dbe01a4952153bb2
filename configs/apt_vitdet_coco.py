# APT-EVA02-B + ViTDet Cascade Mask R-CNN on COCO at 1536: the baseline of
# eva02_vitdet_coco.py with adaptive patches 16/32/64/128 and the paper's
# detection thresholds (tau_32, tau_64, tau_128) = (2, 2, 0.3). Windows of 32
# tokens (512 px) are a multiple of the largest patch (8 cells), so no patch
# straddles two windows; inputs are padded to 1536 (a multiple of 512).
#   bash tools/dist_train.sh configs/apt_vitdet_coco.py 8 --auto-scale-lr
_base_ = ['./eva02_vitdet_coco.py']
model = dict(backbone=_base_.apt_backbone)
# No find_unused_parameters: the APT layers get a gradient (zero when the
# batch merges nothing) on every rank in every iteration.
