# Runtime of the mmapt segmentation (mmseg) configs: default_runtime.py with
# mmseg's scope and visualizer. The hooks are in the schedule files
# (schedules/ade20k_*.py): their checkpoint cadence follows the schedule.
_base_ = './default_runtime.py'
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=True)
visualizer = dict(type='SegLocalVisualizer')
tta_model = dict(type='SegTTAModel')
