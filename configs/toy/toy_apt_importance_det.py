# Toy APT with an importance map: configs/toy/toy_apt_det.py in budget mode
# (half the tokens of the plain grid, every image), the tokens spent where
# the boxes are. The map is the ground-truth boxes (BoxImportanceMap), an
# oracle: it measures what importance can buy; for a real test, give the
# boxes of a cheap first pass (or a saliency map, LoadImportanceMap) instead.
# How the map reaches the backbone: docs/tokenizer.md, "Per-image data".
#   python tools/misc/make_toy_coco.py data/toy_coco
#   python tools/train.py configs/toy/toy_apt_importance_det.py
_base_ = ['./toy_apt_det.py']
model = dict(
    # The toy preprocessor (mean, std, padding) plus the importance maps as
    # a 4th input channel.
    data_preprocessor=dict(
        type='APTDataPreprocessor', wraps='DetDataPreprocessor'),
    backbone=dict(
        keep_ratio=0.5,
        # score = entropy * (1 + importance): doubled inside boxes.
        scorer=dict(type='importance', base=dict(type='entropy'), alpha=1.0)))
importance = dict(type='BoxImportanceMap', value=1.0, background=0.0)
# The toy pipelines, each followed by the map.
train_pipeline = [*_base_.train_pipeline, importance]
test_pipeline = [*_base_.test_pipeline, importance]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
