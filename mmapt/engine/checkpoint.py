# Copyright (c) mmapt contributors. All rights reserved.
"""Loading trusted mmengine checkpoints under torch >= 2.6, explicitly.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10
calls ``torch.load`` without the argument, and the checkpoints its Runner
writes hold more than tensors (the message hub's ``HistoryBuffer``, numpy
arrays and scalars), so they no longer load: ``tools/test.py``,
``tools/train.py --resume``, a fine-tune's ``load_from``,
``init_detector`` / ``init_model`` on a trained model all fail with an
``UnpicklingError``.

``import mmapt`` leaves mmengine's loader alone. The places that load such
checkpoints say so with :func:`trusted_checkpoints`: inside the block,
mmengine loads local files with ``weights_only=False`` (its behaviour before
torch 2.6); outside it, mmengine's own loader is back. ``tools/train.py``,
``tools/test.py``, ``demo/image_demo.py`` and the analysis tools' model
builder use it; in your own scripts::

    from mmapt.engine import trusted_checkpoints
    with trusted_checkpoints():
        model = init_detector(config, 'work_dirs/x/iter_300.pth')

As with any pickle, load only checkpoints you trust. Converted checkpoints
(``tools/model_converters``) hold tensors and plain metadata only and load
either way.
"""
import os.path as osp
from contextlib import contextmanager
from typing import Iterator

import torch
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local

# Nesting depth of trusted_checkpoints blocks: the loader is swapped back
# only when the outermost one ends.
_depth = 0


def load_trusted_local(filename: str, map_location=None) -> dict:
    """mmengine's loader of local files with ``weights_only=False``.

    Args:
        filename (str): Path of the checkpoint (``~`` is expanded).
        map_location (str | torch.device, optional): Same as
            :func:`torch.load`.

    Returns:
        dict | OrderedDict: The loaded checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


@contextmanager
def trusted_checkpoints() -> Iterator[None]:
    """Let mmengine load full (pickled) local checkpoints inside the block.

    Not thread-safe: mmengine's loader table is process-wide, so wrap the
    entry point (``runner.train()``, ``runner.test()``, ``init_detector``),
    not code that runs concurrently with other loads.
    """
    global _depth
    if _depth == 0:
        CheckpointLoader.register_scheme('', load_trusted_local, force=True)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            CheckpointLoader.register_scheme('', load_from_local, force=True)
