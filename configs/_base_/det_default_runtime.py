# Runtime of the mmapt detection (mmdet) configs: default_runtime.py with
# mmdet's scope, hooks (default_hooks.py: a checkpoint every 5000 iterations,
# the last 3 kept) and visualizer.
_base_ = ['./default_runtime.py', './default_hooks.py']
default_scope = 'mmdet'
default_hooks = dict(
    checkpoint=dict(interval=5000, max_keep_ckpts=3, save_last=True),
    visualization=dict(type='DetVisualizationHook'))
# Tokens kept / keep ratio in the logs, scalars and metrics files.
custom_hooks = [dict(type='TokenStatsHook')]
env_cfg = dict(cudnn_benchmark=False)
visualizer = dict(type='DetLocalVisualizer')
log_processor = dict(type='LogProcessor', window_size=50)
