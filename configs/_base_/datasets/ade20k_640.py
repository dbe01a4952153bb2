# ADE20K at 640 x 640 crops (test: short side 640). Same layout as
# ade20k_512.py; only the sizes change. Its pipelines are copied and resized
# (a list replaces the base's whole: see ../default_runtime.py).
_base_ = './ade20k_512.py'
crop_size = (640, 640)
train_pipeline = [dict(step) for step in _base_.train_pipeline]
train_pipeline[2].update(scale=(2560, 640))  # RandomResize
train_pipeline[3].update(crop_size=crop_size)  # RandomCrop
test_pipeline = [dict(step) for step in _base_.test_pipeline]
test_pipeline[1].update(scale=(2560, 640))  # Resize
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
