# Copyright (c) mmapt contributors. All rights reserved.
"""Checkpoints checked before the model is built: they load (safely), and
``--resume`` without a path finds an intact one.

mmengine's auto-resume reads ``WORK_DIR/last_checkpoint`` and loads the file
it names after the model is built; a deleted or truncated file gives a
traceback then. :func:`resolve_auto_resume` checks that file first (it
exists, is whole and loads; tensors are mapped, not read) and otherwise
falls back to the newest intact ``iter_N.pth`` / ``epoch_N.pth`` with a
warning, or stops with one line when there is none.
"""
import logging
import os
import os.path as osp
import re
from typing import List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

from mmapt.checkpoints.atomic_file import remove_temp_files
from mmapt.checkpoints.checkpoint_file import (CheckpointFileError,
                                               UntrustedCheckpointError,
                                               load_checkpoint_file)
from .preflight import REMOTE_PREFIXES, BadInputError

_CHECKPOINT_NAME = re.compile(r'(iter|epoch)_(\d+)\.pth')


def checkpoint_load_problem(path: str,
                            trust: Optional[bool] = None) -> Optional[str]:
    """Why ``path`` cannot be loaded (one line naming the file), or None.

    Raises:
        UntrustedCheckpointError: The file needs the trust opt-in (not a
            broken file: another checkpoint would not help).
    """
    try:
        load_checkpoint_file(path, trust=trust, mmap=True)
    except UntrustedCheckpointError:
        raise
    except CheckpointFileError as err:
        return str(err)
    return None


def check_checkpoints_load(cfg: Config, trust: Optional[bool]) -> None:
    """``load_from`` and the backbone's ``Pretrained`` checkpoint load
    without running code (local files; mapped, not read), before the model
    is built. Raises :class:`~mmapt.engine.preflight.BadInputError`."""
    paths = [cfg.get('load_from')]
    model = cfg.get('model') or {}
    init_cfg = (model.get('backbone') or {}).get('init_cfg')
    for init in (init_cfg if isinstance(init_cfg, list) else [init_cfg]):
        if init and init.get('type') == 'Pretrained':
            paths.append(init.get('checkpoint'))
    for path in paths:
        if not path or str(path).startswith(REMOTE_PREFIXES):
            continue
        try:
            problem = checkpoint_load_problem(path, trust)
        except UntrustedCheckpointError as err:
            raise BadInputError(str(err)) from None
        if problem is not None:
            raise BadInputError(problem)


def list_checkpoints(*folders: str) -> List[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` of the folders, largest N first
    (hidden temporary files are not listed)."""
    found = set()
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = _CHECKPOINT_NAME.fullmatch(name)
            if match:
                found.add((int(match.group(2)), osp.join(folder, name)))
    return [path for _, path in sorted(found, reverse=True)]


def resolve_auto_resume(work_dir: str,
                        trust: Optional[bool] = None) -> Optional[str]:
    """The checkpoint ``--resume`` (without a path) should continue from.

    Removes temporary files a killed save left (they can fill the disk the
    resumed run writes to). Returns None when ``work_dir`` holds no
    ``last_checkpoint`` (mmengine then starts anew).

    Raises:
        BadInputError: ``last_checkpoint`` names a file that cannot be
            resumed and no other intact checkpoint is left, or the file
            needs the trust opt-in.
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        named = f.read().strip()
    folders = []
    for folder in (osp.dirname(named) if named else None, work_dir):
        if folder and osp.isdir(folder) and folder not in folders:
            folders.append(folder)
            remove_temp_files(folder)
    try:
        problem = checkpoint_load_problem(named, trust) if named else \
            f'{record} is empty'
        if problem is None:
            return named
        for path in list_checkpoints(*folders):
            if path != named and checkpoint_load_problem(path, trust) is None:
                print_log(
                    f'--resume: {record} names a checkpoint that cannot be '
                    f'resumed ({problem}); resuming from {path}, the newest '
                    'intact checkpoint',
                    logger='current',
                    level=logging.WARNING)
                return path
    except UntrustedCheckpointError as err:
        raise BadInputError(f'--resume: {err}') from None
    raise BadInputError(
        f'--resume: {record} names a checkpoint that cannot be resumed '
        f'({problem}), and no other intact checkpoint is in '
        f'{", ".join(folders) or work_dir}. Pass --resume PATH of an intact '
        'checkpoint, or train without --resume to start anew')
