# The `learned` patch scorer with the task term on the toy detection set:
# configs/toy/toy_learned_scorer_coco.py (same detector, images, schedule)
# plus the training images' instance masks, so the drift target of a patch
# counts (1 + task_weight) times where objects cover it
# (mmapt/models/distillers/task_maps.py). Reads the training annotations;
# evaluation uses the val images.
#   python tools/train.py configs/toy/toy_learned_scorer_coco_task.py
# then use it: model.backbone.scorer=dict(type='learned',
#   checkpoint='work_dirs/toy_learned_scorer_coco_task/iter_400.pth')
_base_ = ['./toy_learned_scorer_coco.py']

# Chosen before any evaluation: an object patch's drift target doubles.
model = dict(task_weight=3.)

# The base config's pipeline with the labels loaded after the image.
train_pipeline = _base_.train_pipeline[:1] + [
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True)
] + _base_.train_pipeline[1:]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
