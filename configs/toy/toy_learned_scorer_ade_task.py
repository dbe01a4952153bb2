# The `learned` patch scorer with the task term on the toy segmentation set:
# configs/toy/toy_learned_scorer_ade.py (same segmentor, images, schedule)
# plus the training label maps, so the drift target of a patch counts
# (1 + task_weight) times on its cells that hold a class boundary
# (mmapt/models/distillers/task_maps.py). Reads the training annotations;
# evaluation uses the val images.
#   python tools/train.py configs/toy/toy_learned_scorer_ade_task.py
# then use it: model.backbone.scorer=dict(type='learned', patch_sizes=(32, ),
#   checkpoint='work_dirs/toy_learned_scorer_ade_task/iter_400.pth')
_base_ = ['./toy_learned_scorer_ade.py']

# Chosen before any evaluation: a boundary patch's drift target doubles.
model = dict(task_weight=3.)

# The base config's pipeline with the labels loaded after the image.
train_pipeline = _base_.train_pipeline[:1] + [
    dict(type='LoadAnnotations', reduce_zero_label=True)
] + _base_.train_pipeline[1:]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
