"""mmapt registries: the mmengine root registries, re-exported.

mmapt registers everything in mmengine's *root* registries so that mmdet and
mmseg (whose registries are children of the root) both find the modules after
``custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)``.
Import registries from here rather than from mmengine directly, so there is
one place to change should mmapt ever need its own scope.
"""
from mmengine.registry import (DATA_SAMPLERS, DATASETS, EVALUATOR, HOOKS,
                               LOG_PROCESSORS, LOOPS, METRICS, MODEL_WRAPPERS,
                               MODELS, OPTIM_WRAPPER_CONSTRUCTORS,
                               OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS,
                               RUNNERS, TRANSFORMS, VISBACKENDS, VISUALIZERS,
                               WEIGHT_INITIALIZERS)

__all__ = [
    'DATA_SAMPLERS', 'DATASETS', 'EVALUATOR', 'HOOKS', 'LOG_PROCESSORS',
    'LOOPS', 'METRICS', 'MODEL_WRAPPERS', 'MODELS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIM_WRAPPERS', 'OPTIMIZERS',
    'PARAM_SCHEDULERS', 'RUNNERS', 'TRANSFORMS', 'VISBACKENDS', 'VISUALIZERS',
    'WEIGHT_INITIALIZERS'
]
