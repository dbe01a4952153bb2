# The `learned` patch scorer with the object-border task term on the toy
# detection set: configs/toy/toy_learned_scorer_coco_task.py (same detector,
# images, schedule, instance masks, task_weight) with the weight on the
# cells that hold an object's border instead of on the objects' area
# (mmapt/models/distillers/task_maps.py, task_map='borders'). Reads the
# training annotations; evaluation uses the val images.
#   python tools/train.py configs/toy/toy_learned_scorer_coco_borders.py
# then use it: model.backbone.scorer=dict(type='learned',
#   checkpoint='work_dirs/toy_learned_scorer_coco_borders/iter_400.pth')
_base_ = ['./toy_learned_scorer_coco_task.py']

# Chosen before any evaluation: the coverage config's weight, on borders.
model = dict(task_map='borders')
