# APT-EVA02-L + ViTDet Cascade Mask R-CNN on COCO at 1536: the baseline of
# eva02_vitdet_coco_large.py with patches 16-128 and thresholds (2, 2, 0.3).
_base_ = ['./eva02_vitdet_coco_large.py']
model = dict(
    backbone=dict(
        type='APTEVA02',
        thresholds=(2.0, 2.0, 0.3),
        patch_sizes=(16, 32, 64, 128),
        entropy_bins=512,
        mean=_base_.model.data_preprocessor.mean,
        std=_base_.model.data_preprocessor.std))
