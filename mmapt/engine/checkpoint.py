# Copyright (c) mmapt contributors. All rights reserved.
"""mmengine checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10
calls ``torch.load`` without the argument, and its own checkpoints hold more
than tensors (the message hub's ``HistoryBuffer``, numpy arrays and scalars),
so loading a checkpoint written by the Runner fails (``tools/test.py``,
``--resume``, ``load_from``, ``init_detector``, ``DetInferencer``,
``init_model`` ...). Importing mmapt replaces mmengine's loader of local files
by one that passes ``weights_only=False`` explicitly: mmengine's behaviour
before torch 2.6, for mmengine's checkpoint loading only (``torch.load``
elsewhere keeps its default). As with any pickle, load only checkpoints you
trust.
"""
import os.path as osp

import torch
from mmengine.runner.checkpoint import CheckpointLoader


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location=None) -> dict:
    """Load a local checkpoint file (mmengine's loader,
    ``weights_only=False``).

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
