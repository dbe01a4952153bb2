"""mmapt registries: the mmengine root registries, re-exported.

mmapt registers everything in mmengine's *root* registries so that mmdet and
mmseg (whose registries are children of the root) both find the modules after
``custom_imports = dict(imports=['mmapt'], allow_failed_imports=False)``.
Import registries from here rather than from mmengine directly, so there is
one place to change should mmapt ever need its own scope.

:data:`PATCH_SCORERS` is mmapt's own registry (no mmengine counterpart): the
patch scorers of the APT tokenizer (``mmapt.tokenizer.scorers``), selected by
``scorer=dict(type='entropy' | 'gradient' | 'contrast' | 'importance', ...)``
on the APT backbones and by ``--scorer`` in the tools. Build scorers with
:func:`mmapt.tokenizer.build_scorer`, which names the registered scorers when
a name is unknown.
"""
from mmengine.registry import (DATA_SAMPLERS, DATASETS, EVALUATOR, HOOKS,
                               LOG_PROCESSORS, LOOPS, METRICS, MODEL_WRAPPERS,
                               MODELS, OPTIM_WRAPPER_CONSTRUCTORS,
                               OPTIM_WRAPPERS, OPTIMIZERS, PARAM_SCHEDULERS,
                               RUNNERS, TRANSFORMS, VISBACKENDS, VISUALIZERS,
                               WEIGHT_INITIALIZERS, Registry)

#: Patch scorers: per-scale score maps that decide the APT patch sizes.
PATCH_SCORERS = Registry(
    'patch scorer', scope='mmapt', locations=['mmapt.tokenizer.scorers'])

__all__ = [
    'DATA_SAMPLERS', 'DATASETS', 'EVALUATOR', 'HOOKS', 'LOG_PROCESSORS',
    'LOOPS', 'METRICS', 'MODEL_WRAPPERS', 'MODELS',
    'OPTIM_WRAPPER_CONSTRUCTORS', 'OPTIM_WRAPPERS', 'OPTIMIZERS',
    'PATCH_SCORERS', 'PARAM_SCHEDULERS', 'RUNNERS', 'TRANSFORMS',
    'VISBACKENDS', 'VISUALIZERS', 'WEIGHT_INITIALIZERS'
]
