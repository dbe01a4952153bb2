# EVA-02-L ViTDet Cascade Mask R-CNN on COCO at 1536 after Objects365: the
# architecture of the released eva02_L_coco_det_sys_o365.pth and
# eva02_L_coco_seg_sys_o365.pth (16-token windows instead of 32, global
# blocks 2, 5, ..., 23). Their scores (64.1 / 54.3 and 63.9 / 55.4) come from
# the EMA weights: convert with --ema.
#   python tools/model_converters/eva02_det_to_mmapt.py --ema \
#       eva02_L_coco_det_sys_o365.pth \
#       checkpoints/eva02_L_coco_det_sys_o365_mmapt.pth
#   python tools/test.py configs/eva02_vitdet_coco_large_o365.py \
#       checkpoints/eva02_L_coco_det_sys_o365_mmapt.pth --released-scoring
_base_ = ['./eva02_vitdet_coco_large.py']
model = dict(backbone=dict(window_size=16))
