# Runtime of the mmapt detection (mmdet) configs: default_runtime.py with
# mmdet's scope, hooks and visualizer.
_base_ = './default_runtime.py'
default_scope = 'mmdet'
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # mmengine's CheckpointHook with atomic writes and generator states for
    # an exact --resume (docs/reliability.md).
    checkpoint=dict(
        type='SafeCheckpointHook',
        by_epoch=False,
        interval=5000,
        max_keep_ckpts=3,
        save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'))
# Tokens kept / keep ratio in the logs, scalars and metrics files.
custom_hooks = [dict(type='TokenStatsHook')]
env_cfg = dict(cudnn_benchmark=False)
visualizer = dict(type='DetLocalVisualizer')
log_processor = dict(type='LogProcessor', window_size=50)
