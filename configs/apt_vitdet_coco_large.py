# APT-EVA02-L + ViTDet Cascade Mask R-CNN on COCO at 1536: the baseline of
# eva02_vitdet_coco_large.py with patches 16-128 and thresholds (2, 2, 0.3).
_base_ = ['./eva02_vitdet_coco_large.py']
model = dict(backbone=_base_.apt_backbone)
