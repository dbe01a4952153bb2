# Copyright (c) mmapt contributors. All rights reserved.
"""Mixed-precision inference: autocast test/val loops and helpers.

mmengine's ``TestLoop(fp16=True)`` autocasts the whole ``test_step`` to
fp16 on CUDA. mmapt adds a dtype choice (fp16 or bf16), CPU support, and a
*scope*:

* ``'features'`` (default): only ``model.extract_feat`` (backbone + neck)
  runs under autocast; its outputs are cast back to fp32, so the heads
  (RoIAlign, NMS, box decoding, segmentation decoders) run in fp32. mmcv's
  CPU NMS/RoIAlign have no bf16 kernels, and fp16 box coordinates lose
  sub-pixel precision above 1024 px; the backbone is where the time goes.
* ``'model'``: the whole ``test_step``, as mmengine's ``fp16=True``.
"""
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from torch.utils.data import DataLoader

from mmapt.engine.precision import AMP_DTYPES, resolve_amp_dtype
from mmapt.registry import LOOPS

AMP_SCOPES = ('features', 'model')


def _to_float(value: Any) -> Any:
    """Half-precision tensors (in nested tuples/lists/dicts) -> fp32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.float16,
                                                torch.bfloat16) else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _to_float(v)) for k, v in value.items())
    return value


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if is_model_wrapper(model) or hasattr(
        model, 'module') else model


@contextmanager
def _autocast_method(model: nn.Module, name: str, device_type: str,
                     dtype: torch.dtype, to_float: bool) -> Iterator[None]:
    """Run ``model.<name>`` under autocast inside the block (an instance
    attribute shadows the method and is removed afterwards)."""
    model = _unwrap(model)
    method = getattr(model, name, None)
    if not callable(method):
        raise TypeError(f'{type(model).__name__} has no {name}(); autocast '
                        f"scope 'features' needs an mmdet/mmseg model with "
                        f"extract_feat, use scope='model' otherwise")
    shadowed = name in vars(model)

    def wrapped(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            out = method(*args, **kwargs)
        return _to_float(out) if to_float else out

    setattr(model, name, wrapped)
    try:
        yield
    finally:
        if shadowed:
            setattr(model, name, method)
        else:
            delattr(model, name)


def autocast_model(model: nn.Module,
                   device_type: str,
                   dtype: Union[str, torch.dtype, None] = None,
                   scope: str = 'features'):
    """Context manager: run ``model`` in mixed precision inside the block.

    Args:
        model (nn.Module): An mmdet detector or mmseg segmentor (or a DDP
            wrapper of one).
        device_type (str): ``'cuda'`` or ``'cpu'``.
        dtype (str | torch.dtype, optional): ``'fp16'`` or ``'bf16'``;
            None = fp16 on CUDA, bf16 on CPU.
        scope (str): ``'features'``: ``extract_feat`` (backbone + neck) in
            the autocast dtype, its outputs cast to fp32 for the heads.
            ``'model'``: all of ``test_step``/``forward``, heads included.

    Example:
        >>> with autocast_model(model, 'cpu', 'bf16'):
        ...     losses = model.loss(inputs, data_samples)
    """
    if scope not in AMP_SCOPES:
        raise ValueError(f'autocast scope must be one of {AMP_SCOPES}, got '
                         f'{scope!r}')
    dtype = resolve_amp_dtype(dtype, device_type)
    if scope == 'features':
        return _autocast_method(
            model, 'extract_feat', device_type, dtype, to_float=True)
    return torch.autocast(device_type, dtype=dtype)


def _model_device_type(model: nn.Module) -> str:
    param = next(iter(model.parameters()), None)
    return 'cpu' if param is None else param.device.type


class _AutocastLoopMixin:
    """Runs the loop's model calls in mixed precision (see module doc)."""

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Dict, List, Any],
                 dtype: Optional[str] = None,
                 scope: str = 'features') -> None:
        super().__init__(runner, dataloader, evaluator, fp16=False)
        if scope not in AMP_SCOPES:
            raise ValueError(f'{type(self).__name__}: scope must be one of '
                             f'{AMP_SCOPES}, got {scope!r}')
        if dtype is not None:
            resolve_amp_dtype(dtype, 'cuda')  # fail at build, not at run
        self.amp_dtype = dtype
        self.amp_scope = scope
        self.amp_used: Optional[str] = None

    def run(self) -> dict:
        with self._autocast_context():
            return super().run()

    def _autocast_context(self):
        model = self.runner.model
        device_type = _model_device_type(model)
        dtype = resolve_amp_dtype(self.amp_dtype, device_type)
        # What ran, for reports: e.g. 'cpu bfloat16 features'.
        self.amp_used = f'{device_type} {str(dtype)[6:]} {self.amp_scope}'
        if self.amp_scope == 'model':
            # Shadow test_step/val_step only: hooks and the evaluator stay
            # in fp32.
            step = 'test_step' if isinstance(self, TestLoop) else 'val_step'
            return _autocast_method(model, step, device_type, dtype, False)
        return autocast_model(model, device_type, dtype, 'features')


@LOOPS.register_module()
class AmpTestLoop(_AutocastLoopMixin, TestLoop):
    """mmengine's ``TestLoop`` in mixed precision, with a dtype choice.

    ``test_cfg = dict(type='AmpTestLoop', dtype='bf16')`` in a config, or
    ``tools/test.py --amp [--amp-dtype bf16]``.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): Test dataloader (or its config).
        evaluator (Evaluator | dict | list): Test evaluator.
        dtype (str, optional): ``'fp16'`` or ``'bf16'``; None = fp16 on
            CUDA, bf16 on CPU. Defaults to None.
        scope (str): ``'features'`` (backbone + neck in ``dtype``, heads in
            fp32) or ``'model'`` (all of ``test_step``). Defaults to
            ``'features'``.
    """


@LOOPS.register_module()
class AmpValLoop(_AutocastLoopMixin, ValLoop):
    """mmengine's ``ValLoop`` in mixed precision; arguments as
    :class:`AmpTestLoop` (``val_cfg = dict(type='AmpValLoop', ...)``)."""


def apply_amp_test_cfg(cfg, dtype: Optional[str], scope: str) -> None:
    """Make ``cfg.test_cfg`` an :class:`AmpTestLoop` (``tools/test.py
    --amp``), keeping the loop's other keys."""
    test_cfg = dict(cfg.get('test_cfg') or {})
    loop_type = test_cfg.pop('type', 'TestLoop')
    if loop_type not in ('TestLoop', 'AmpTestLoop'):
        raise ValueError(f'--amp replaces test_cfg.type TestLoop, but this '
                         f'config uses {loop_type!r}; set its precision in '
                         f'the config instead')
    test_cfg.pop('fp16', None)
    test_cfg.update(type='AmpTestLoop', dtype=dtype, scope=scope)
    cfg.test_cfg = test_cfg


__all__ = [
    'AMP_DTYPES', 'AMP_SCOPES', 'resolve_amp_dtype', 'autocast_model',
    'AmpTestLoop', 'AmpValLoop', 'apply_amp_test_cfg'
]
