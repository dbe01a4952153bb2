# APT-EVA02-B detector whose patch sizes come from the `learned` scorer
# (trained without labels by configs/learned_scorer_coco.py), in budget mode:
# every image keeps 70% of the plain grid's tokens, the patches whose merge
# would move the features most stay small. The scorer's weights:
#   S=work_dirs/learned_scorer_coco/iter_5000.pth
#   python tools/test.py configs/apt_vitdet_coco_learned.py DETECTOR.pth \
#       --cfg-options model.backbone.scorer.checkpoint=$S
# (or a checkpoint that already holds backbone.apt_scorer.*). Without them
# the first forward stops with an error naming this option.
_base_ = ['./apt_vitdet_coco.py']
# (the learned scorer's default patch sizes are this model's: 32, 64, 128)
model = dict(backbone=dict(keep_ratio=0.7, scorer=dict(type='learned')))
