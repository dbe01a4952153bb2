# Runtime shared by det_default_runtime.py (mmdet) and seg_default_runtime.py
# (mmseg): mmapt's modules, the visualizer backends, logging, no checkpoint.
#
# How the configs of configs/ inherit (every config has this file as a base):
# - dicts merge key by key with their bases', so a config states only what it
#   changes (`custom_imports` is set here alone; APT configs change the
#   backbone's type and APT keys, nothing else);
# - a list (pipelines, param_scheduler, bbox_head, rcnn train_cfg, taps)
#   replaces the base's list whole; to change one item, a config copies the
#   base's list (`_base_.x`: mmengine runs a config with `_base_` bound to its
#   merged bases) and edits the copy, e.g. datasets/ade20k_640.py;
# - each model base (models/*.py) also sets `apt_backbone`, the backbone
#   settings of the APT twin (type, thresholds, patch sizes, the data
#   preprocessor's mean/std); a config that changes the family or the
#   statistics updates it, and an APT config is its plain twin plus
#   `model = dict(backbone=_base_.apt_backbone)`;
# - two bases of one config may not set the same key (mmengine refuses it),
#   so a schedule cannot be mixed into a config whose base already has one:
#   the fine-tune configs restate their schedule.
custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)
env_cfg = dict(
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # tools/train.py and tools/test.py switch to gloo when CUDA is absent.
    dist_cfg=dict(backend='nccl'))
# LocalVisBackend writes work_dirs/.../vis_data/scalars.json (and the json
# log that tools/analysis/analyze_logs.py plots). The environment variable
# MMAPT_VIS_BACKENDS=LocalVisBackend,TensorboardVisBackend adds TensorBoard
# (`pip install .[vis]`, docs/install.md); keep LocalVisBackend in the list.
vis_backends = [
    dict(type=name)
    for name in '{{$MMAPT_VIS_BACKENDS:LocalVisBackend}}'.split(',')
]
visualizer = dict(
    type='Visualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
