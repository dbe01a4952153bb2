# APT-DINOv2-B + ViTDet Cascade Mask R-CNN on COCO at 1568: the baseline of
# dinov2_vitdet_coco.py with adaptive patches 14/28/56/112 and the paper's
# detection thresholds (2, 2, 0.3). The 16-cell windows are a multiple of the
# largest patch (8 cells) and the 1568 canvas a multiple of the window.
#   bash tools/dist_train.sh configs/apt_dinov2_vitdet_coco.py 8 \
#       --auto-scale-lr
_base_ = ['./dinov2_vitdet_coco.py']
model = dict(backbone=_base_.apt_backbone)
