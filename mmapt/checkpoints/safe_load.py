# Copyright (c) mmapt contributors. All rights reserved.
"""What a checkpoint may hold when it is loaded without running its code.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers only;
any other global a pickle names is refused. The checkpoints mmapt reads hold
a few more, all of them data:

* mmengine Runner checkpoints: the message hub's ``HistoryBuffer`` (whose
  pickle names its statistics methods through ``getattr``), numpy arrays,
  scalars and dtypes (the message hub, numpy's generator state saved by
  ``SafeCheckpointHook``);
* the converters' outputs and the released EVA-02 files (detectron2, mmseg
  0.x, timm, the official ``.pt``): tensors, numbers, strings, tuples.

:func:`checkpoint_safe_globals` lists them for
``torch.serialization.safe_globals``. ``getattr`` is never allowed as such:
the pickle's ``getattr`` is :func:`history_buffer_method`, which returns a
``HistoryBuffer`` statistics method and refuses everything else.

A checkpoint that needs another global is refused unless the user trusts
it: ``--trust-checkpoint`` on the tools, ``MMAPT_TRUST_CHECKPOINTS=1`` for
the Python APIs. Trusted files load with ``weights_only=False`` (the pickle
can run any code).
"""
import os
import pickle
import re
from contextlib import nullcontext
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

#: The environment variable that lets the Python APIs load full pickles.
TRUST_ENV = 'MMAPT_TRUST_CHECKPOINTS'
#: The tools' switch for the same.
TRUST_FLAG = '--trust-checkpoint'
TRUST_HINT = (f'if you trust the file, pass {TRUST_FLAG} to the tool or '
              f'set {TRUST_ENV}=1 (the file may then run code when loaded)')

# Statistics methods HistoryBuffer registers by default; a checkpoint names
# them as getattr(HistoryBuffer, 'min') and so on.
_HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')


def trust_from_env() -> bool:
    """Whether ``MMAPT_TRUST_CHECKPOINTS`` asks for full (pickled) loads.

    Raises:
        ValueError: The variable holds something other than 0/1 (or
            true/false, yes/no).
    """
    value = os.environ.get(TRUST_ENV, '').strip().lower()
    if value in ('', '0', 'false', 'no'):
        return False
    if value in ('1', 'true', 'yes'):
        return True
    raise ValueError(f'{TRUST_ENV}={value!r}: use 1 to load checkpoints '
                     'with weights_only=False (trusted files only) or 0 / '
                     'unset for safe loading')


def history_buffer_method(owner: type, name: str) -> Callable:
    """The ``getattr`` of a checkpoint's pickle: only
    ``HistoryBuffer.<statistics method>``."""
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in _HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: getattr({getattr(owner, "__name__", owner)!r}, '
        f'{name!r}) is not a HistoryBuffer statistics method')


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    try:  # numpy >= 2 (numpy.core is a deprecated alias there)
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    found: List[Union[Callable, Tuple[Callable, str]]] = [np.ndarray, np.dtype]
    # A pickle names the module of the numpy that wrote it: accept both.
    for name in ('_reconstruct', 'scalar'):
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
            found.append((getattr(multiarray, name), f'{module}.{name}'))
    # numpy >= 1.25 may name the dtype classes (numpy.dtypes.Float64DType).
    for code in ('?', 'b', 'B', 'h', 'H', 'i', 'I', 'l', 'L', 'q', 'Q', 'e',
                 'f', 'd', 'g', 'U', 'S', 'O'):
        dtype_class = type(np.dtype(code))
        if dtype_class is not np.dtype:
            found.append(dtype_class)
    return found


def checkpoint_safe_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """The globals (beyond torch's own) that mmapt lets a checkpoint name
    in a ``weights_only`` load: for ``torch.serialization.safe_globals``."""
    from mmengine.logging import HistoryBuffer
    return [
        HistoryBuffer, (history_buffer_method, 'builtins.getattr'),
        (history_buffer_method, '__builtin__.getattr')
    ] + _numpy_globals()


def allowed_globals():
    """``torch.serialization.safe_globals(checkpoint_safe_globals())``; on
    torch < 2.5 (no such block) nothing beyond torch's own types, so Runner
    checkpoints need the opt-in there."""
    import torch
    block = getattr(torch.serialization, 'safe_globals', None)
    return block(checkpoint_safe_globals()) if block else nullcontext()


def refused_global(err: BaseException) -> Optional[str]:
    """The global a ``weights_only`` load refused, from torch's message
    (None when the error is about something else)."""
    text = str(err)
    match = re.search(r'GLOBAL ([\w.]+)', text)
    if match:  # torch writes builtins.exec as exec
        name = match.group(1)
        return name if '.' in name else f'builtins.{name}'

    match = re.search(r'Unsupported global: (\S+)', text)
    if match:
        return match.group(1)
    match = re.search(r'unrecognized function ([^\n]+)', text)
    if match:
        return match.group(1).strip()
    return None
