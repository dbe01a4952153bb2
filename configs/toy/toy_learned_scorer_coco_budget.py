# The label-free `learned` patch scorer trained at budget mode's operating
# point on the toy detection set: configs/toy/toy_learned_scorer_coco.py
# (same detector, images, schedule, network) with drift targets measured on
# the budget layouts of keep ratios 0.5 and 0.7 made by the scorer's own
# scores, for the patches those budgets merge or split last
# (mmapt/models/distillers/budget_targets.py). Reads the training images only.
#   python tools/train.py configs/toy/toy_learned_scorer_coco_budget.py
# then use it: model.backbone.scorer=dict(type='learned',
#   checkpoint='work_dirs/toy_learned_scorer_coco_budget/iter_400.pth')
_base_ = ['./toy_learned_scorer_coco.py']

# The keep ratios the scorer is evaluated at (docs/scorers_eval.md).
model = dict(merge_pattern='budget', budget_keep=(0.5, 0.7))
