# Baseline: plain EVA-02-B + ViTDet Cascade Mask R-CNN on COCO 2017 instances
# at 1536 x 1536 (LSJ 0.1-2.0), 60k iterations at batch 128; AdamW lr 5e-5,
# wd 0.1, layer decay 0.7, AMP, soft-NMS at test (docs/method.md, section 6).
#
# Needs data/coco/ (COCO 2017 layout) and the converted backbone weights
# checkpoints/eva02_B_pt_in21k_p16_mmapt.pth (docs/detection.md).
#   bash tools/dist_train.sh configs/eva02_vitdet_coco.py 8 --auto-scale-lr
_base_ = [
    './_base_/models/cascade_mask_rcnn_vitdet.py',
    './_base_/datasets/coco_instance_1536.py',
    './_base_/schedules/vitdet_60k.py',
    './_base_/det_default_runtime.py',
]
