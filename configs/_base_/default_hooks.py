# The iteration-based hooks of every mmapt config: logs every 50 iterations,
# mmengine's CheckpointHook with atomic writes and generator states for an
# exact --resume (SafeCheckpointHook, docs/reliability.md). Each user sets the
# checkpoint cadence and the task's visualization hook:
# det_default_runtime.py (mmdet), schedules/ade20k_60k.py (mmseg, the cadence
# follows the schedule), configs/toy/toy_eva02_seg.py. A separate file, not
# default_runtime.py: a schedule that sets hooks is a sibling base of the
# runtime, and two bases may not set the same key.
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='SafeCheckpointHook', by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
