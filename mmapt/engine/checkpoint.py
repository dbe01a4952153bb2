# Copyright (c) mmapt contributors. All rights reserved.
"""Loading mmengine checkpoints without running their code, explicitly.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10
calls ``torch.load`` without the argument. The checkpoints its Runner writes
hold more than tensors (the message hub's ``HistoryBuffer``, numpy arrays
and scalars), so a plain ``weights_only`` load refuses them: ``tools/test.py``,
``tools/train.py --resume``, a fine-tune's ``load_from`` and
``init_detector`` / ``init_model`` on a trained model would fail with an
``UnpicklingError``.

``import mmapt`` leaves mmengine's loader alone. Inside
:func:`safe_checkpoint_loading`, mmengine loads local files (and http(s)
URLs) through :func:`mmapt.checkpoints.load_checkpoint_file`: still
``weights_only=True``, with the few data classes such checkpoints hold
allowed (:mod:`mmapt.checkpoints.safe_load`). A pickle that names anything
else is refused with an error naming the file, the refused global and the
opt-in; its code never runs. ``tools/train.py``, ``tools/test.py``,
``demo/image_demo.py`` and the analysis tools use it; in your own scripts::

    from mmapt.engine import safe_checkpoint_loading
    with safe_checkpoint_loading():
        model = init_detector(config, 'work_dirs/x/iter_300.pth')

A legacy checkpoint that needs more can be loaded as a full pickle (it may
run code) with ``safe_checkpoint_loading(trust=True)``, ``--trust-checkpoint``
on the tools or ``MMAPT_TRUST_CHECKPOINTS=1``; one warning line is printed.
Other URL schemes (``open-mmlab://``, ``torchvision://``, ...) keep
mmengine's loader.
"""
import os.path as osp
from contextlib import contextmanager
from functools import partial
from typing import Iterator, Optional

from mmengine.runner.checkpoint import CheckpointLoader

from mmapt.checkpoints.checkpoint_file import (CheckpointFileError,
                                               load_checkpoint_file)
from mmapt.checkpoints.safe_load import (TRUST_ENV, TRUST_FLAG,
                                         allowed_globals, trust_from_env)

LOCAL = ''
HTTP = ('http://', 'https://')


def load_local_safely(filename: str,
                      map_location=None,
                      trust: Optional[bool] = None) -> dict:
    """mmengine's loader of local files, without running code (see
    :func:`mmapt.checkpoints.load_checkpoint_file`; ``~`` is expanded)."""
    return load_checkpoint_file(
        osp.expanduser(filename), map_location=map_location, trust=trust)


def _load_http_safely(http_loader, filename: str, map_location=None) -> dict:
    """mmengine's download-and-load, ``weights_only=True`` with mmapt's
    allowed globals (download a file you trust and pass its path to load a
    full pickle)."""
    with allowed_globals():
        return http_loader(filename, map_location=map_location)


@contextmanager
def safe_checkpoint_loading(trust: Optional[bool] = None) -> Iterator[None]:
    """mmengine loads local and http(s) checkpoints without running code
    inside the block (Runner checkpoints included).

    Args:
        trust (bool, optional): Load local files as full pickles
            (``weights_only=False``; they may run code), with one warning
            line. None: ``MMAPT_TRUST_CHECKPOINTS=1`` decides.

    Not thread-safe: mmengine's loader table is process-wide, so wrap the
    entry point (``runner.train()``, ``runner.test()``, ``init_detector``),
    not code that runs concurrently with other loads. Blocks nest; each
    restores the loaders it found.
    """
    if trust is None:
        trust = trust_from_env()  # a bad value fails here, before any work
    schemes = CheckpointLoader._schemes
    previous = {prefix: schemes[prefix] for prefix in (LOCAL, ) + HTTP}
    local = partial(load_local_safely, trust=trust)
    local.__name__ = 'load_from_local'  # mmengine logs the name
    http = partial(_load_http_safely, previous[HTTP[0]])
    http.__name__ = 'load_from_http'
    CheckpointLoader.register_scheme(LOCAL, local, force=True)
    CheckpointLoader.register_scheme(list(HTTP), http, force=True)
    try:
        yield
    finally:
        for prefix, loader in previous.items():
            CheckpointLoader.register_scheme(prefix, loader, force=True)


#: The name before checkpoints were loaded safely; kept for scripts.
trusted_checkpoints = safe_checkpoint_loading


def add_trust_argument(parser) -> None:
    """Add ``--trust-checkpoint`` to a tool's parser."""
    parser.add_argument(
        TRUST_FLAG,
        dest='trust_checkpoint',
        action='store_true',
        default=None,
        help='load checkpoints as full pickles (weights_only=False): only '
        'for a legacy file you trust that a safe load refuses; it may run '
        f'code when loaded. The Python APIs read {TRUST_ENV}=1')


@contextmanager
def checkpoint_errors_as_input_errors() -> Iterator[None]:
    """Re-raise what the checkpoint checks raise (a file that cannot be
    loaded safely, weights that do not fit the model) as an
    :class:`~mmapt.engine.preflight.InputError`, which the tools print as
    one line."""
    from mmapt.checkpoints.checkpoint_fit import CheckpointFitError
    from mmapt.engine.preflight import BadInputError
    try:
        yield
    except (CheckpointFileError, CheckpointFitError) as err:
        raise BadInputError(str(err)) from None


def check_output_file(path: str) -> None:
    """Before any slow work: ``path`` can be written as a checkpoint file
    (its folder exists or can be created, and can be written).

    Raises:
        UnwritableOutputError: With the path and what to do.
    """
    from mmapt.engine.preflight import (UnwritableOutputError,
                                        check_writable_dir)
    if osp.isdir(path):
        raise UnwritableOutputError(
            f'output {path} is a folder; name the output file, e.g. '
            f'{osp.join(path, "converted.pth")}')
    check_writable_dir(osp.dirname(path) or '.', 'output folder')
