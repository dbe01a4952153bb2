# APT-EVA02-B + ViTDet Cascade Mask R-CNN on COCO at 1536: the baseline of
# eva02_vitdet_coco.py with adaptive patches 16/32/64/128 and the paper's
# detection thresholds (tau_32, tau_64, tau_128) = (2, 2, 0.3). Windows of 32
# tokens (512 px) are a multiple of the largest patch (8 cells), so no patch
# straddles two windows; inputs are padded to 1536 (a multiple of 512).
#   bash tools/dist_train.sh configs/apt_vitdet_coco.py 8 --auto-scale-lr
_base_ = ['./eva02_vitdet_coco.py']
model = dict(
    backbone=dict(
        type='APTEVA02',
        thresholds=(2.0, 2.0, 0.3),
        patch_sizes=(16, 32, 64, 128),
        entropy_bins=512,
        # The data preprocessor's mean/std (the tokenizer un-normalises the
        # images to score entropy on 0-255 grey levels).
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std))
# No find_unused_parameters: the APT layers get a gradient (zero when the
# batch merges nothing) on every rank in every iteration.
