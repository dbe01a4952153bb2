# EVA-02-B ViTDet Cascade Mask R-CNN on COCO at 1024 x 1024: the architecture
# of the released "bsl" detector eva02_B_coco_bsl.pth (16-token windows,
# global blocks 2, 5, 8, 11) and detectron2's default test rules it was
# scored with (55.5 box / 47.1 mask AP): hard NMS 0.5 per class, scores above
# 0.05, at most 100 detections per image, no maskness rescoring.
#   python tools/model_converters/eva02_det_to_mmapt.py eva02_B_coco_bsl.pth \
#       checkpoints/eva02_B_coco_bsl_mmapt.pth
#   python tools/test.py configs/eva02_vitdet_coco_1024.py \
#       checkpoints/eva02_B_coco_bsl_mmapt.pth
# Training inherits the 1536 recipe (schedule and augmentation at 1024); it
# has not been checked against the bsl training run.
_base_ = ['./eva02_vitdet_coco.py']
image_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=image_size[0],
        batch_augments=[
            dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
        ]),
    backbone=dict(
        img_size=image_size[0],
        window_size=16,
        global_attn_indexes=(2, 5, 8, 11)),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.05,
            nms=dict(_delete_=True, type='nms', iou_threshold=0.5),
            max_per_img=100,
            maskness_thr=None)))
# The bsl numbers used these defaults: --released-scoring changes nothing.
released_test_cfg = dict(_delete_=True)

# The 1536 pipelines at 1024 (lists: see _base_/default_runtime.py).
train_pipeline = [dict(step) for step in _base_.train_pipeline]
train_pipeline[3].update(scale=image_size)  # RandomResize
train_pipeline[4].update(crop_size=image_size)  # RandomCrop
test_pipeline = [dict(step) for step in _base_.test_pipeline]
test_pipeline[1].update(scale=image_size)  # Resize (Pillow, bilinear)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
