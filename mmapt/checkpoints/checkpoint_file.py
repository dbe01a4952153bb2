# Copyright (c) mmapt contributors. All rights reserved.
"""Reading checkpoint files with one clear line when they are broken.

A half-finished download or ``torch.save`` leaves a file that ``torch.load``
rejects with a zip-library traceback (``failed finding central directory``)
and safetensors with a header error. :func:`checkpoint_file_problem` looks at
the file's size and framing only (no tensor is read), so tools can reject a
missing, empty, truncated or foreign file before any slow work;
:func:`load_checkpoint_file` loads it without running code (see
:mod:`mmapt.checkpoints.safe_load`) and turns what the readers raise into a
:class:`CheckpointFileError` naming the file, the problem and what to do.
"""
import json
import os
import os.path as osp
import pickle
import struct
import sys
from typing import Optional

import torch

from .atomic_file import save_torch_atomically
from .safe_load import (TRUST_ENV, TRUST_FLAG, TRUST_HINT, allowed_globals,
                        refused_global, trust_from_env)

# What to do about a file that is not a whole checkpoint.
REDO = ('the download or save did not finish or the file is another kind; '
        'download (or save) it again')

_ZIP_MAGIC = b'PK\x03\x04'
_ZIP_END = b'PK\x05\x06'
# The end record (22 bytes) may be followed by a comment of up to 64 KiB.
_ZIP_END_SEARCH = 22 + 0xFFFF


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read: missing, empty, truncated or
    not a checkpoint. The message names the file and what to do."""


class CheckpointNotFoundError(CheckpointFileError, FileNotFoundError):
    """The checkpoint file does not exist."""


class UntrustedCheckpointError(CheckpointFileError):
    """A checkpoint whose pickle needs more than a load that runs no code
    allows; the message names the refused global and the opt-in."""


# Whether the one warning line about trusted loads was printed.
_trust_warned = False


def _read_head(path: str) -> bytes:
    with open(path, 'rb') as f:
        return f.read(16)


def _is_safetensors(path: str, head: bytes, size: int) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON header
    (``{``)."""
    if path.endswith('.safetensors'):
        return True
    return len(head) >= 9 and head[8:9] == b'{' and \
        struct.unpack('<Q', head[:8])[0] < size


def _safetensors_problem(path: str, size: int) -> Optional[str]:
    with open(path, 'rb') as f:
        raw = f.read(8)
        if len(raw) < 8:
            return (f'truncated safetensors file ({size} bytes, shorter '
                    f'than its 8-byte header length)')
        header_len = struct.unpack('<Q', raw)[0]
        if 8 + header_len > size:
            return (f'truncated safetensors file ({size} of at least '
                    f'{8 + header_len} bytes: the header is cut)')
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return 'not a checkpoint (safetensors header is not valid JSON)'
    ends = [
        entry['data_offsets'][1] for key, entry in header.items()
        if key != '__metadata__' and isinstance(entry, dict)
        and 'data_offsets' in entry
    ]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f'truncated safetensors file ({size} of {expected} bytes)'
    return None


def _zip_problem(path: str, size: int) -> Optional[str]:
    with open(path, 'rb') as f:
        f.seek(max(0, size - _ZIP_END_SEARCH))
        tail = f.read()
    if _ZIP_END not in tail:
        return (f'truncated torch checkpoint ({size} bytes; the end of its '
                'zip archive is missing)')
    return None


def checkpoint_file_problem(path: str) -> Optional[str]:
    """What is wrong with a checkpoint file, from its size and framing.

    Torch zip archives must end with the zip end record, safetensors files
    must be as long as their header says; a legacy (pickle) torch file
    passes (only loading it can tell).

    Args:
        path (str): The file.

    Returns:
        str | None: A one-line message naming the file, the problem and what
        to do; None when the file looks whole.
    """
    if not osp.exists(path):
        return f'{path}: checkpoint not found; check the path'
    if osp.isdir(path):
        return (f'{path}: is a directory, not a checkpoint file; pass the '
                '.pth / .safetensors file')
    size = os.path.getsize(path)
    if size == 0:
        return f'{path}: empty file (0 bytes), not a checkpoint: {REDO}'
    head = _read_head(path)
    if head.startswith(_ZIP_MAGIC):
        problem = _zip_problem(path, size)
    elif _is_safetensors(path, head, size):
        problem = _safetensors_problem(path, size)
    elif head.startswith(b'\x80'):  # pickle protocol >= 2: legacy torch
        problem = None
    else:
        problem = (f'not a checkpoint (neither a torch zip / pickle nor a '
                   f'safetensors file; it starts with {head[:8]!r})')
    return None if problem is None else f'{path}: {problem}: {REDO}'


def _read_errors() -> tuple:
    errors = [RuntimeError, EOFError, OSError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError
        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


def _warn_trusted_once(path: str) -> None:
    """One line per process: trusted loads may run code."""
    global _trust_warned
    if _trust_warned:
        return
    _trust_warned = True
    print(
        f'warning: loading {path} with weights_only=False (trusted '
        f'checkpoints: {TRUST_FLAG} / {TRUST_ENV}=1): a checkpoint loaded '
        'this way can run code; load only files you trust',
        file=sys.stderr)


def _torch_load(path: str, map_location, trust: bool, mmap: bool):
    # mmap (torch >= 2.1) only when asked for: older torch lacks the argument.
    extra = dict(mmap=True) if mmap else {}
    if trust:
        _warn_trusted_once(path)
        return torch.load(
            path, map_location=map_location, weights_only=False, **extra)
    try:
        with allowed_globals():
            return torch.load(
                path, map_location=map_location, weights_only=True, **extra)
    except pickle.UnpicklingError as err:
        refused = refused_global(err)
        if refused is None:
            raise
        raise UntrustedCheckpointError(
            f'{path}: refused to load: the checkpoint names {refused}, '
            'which a load that runs no code does not allow (mmapt allows '
            'tensors, numbers, strings, containers, numpy arrays and '
            f"mmengine's message hub); {TRUST_HINT}") from None


def load_checkpoint_file(path: str,
                         map_location='cpu',
                         trust: Optional[bool] = None,
                         mmap: bool = False) -> dict:
    """A checkpoint, loaded without running code: ``.safetensors``, or a
    torch file through ``torch.load(weights_only=True)`` with
    :func:`~mmapt.checkpoints.safe_load.checkpoint_safe_globals` allowed
    (mmengine Runner checkpoints, the converters' outputs and the released
    EVA-02 files load this way).

    Args:
        path (str): The file.
        map_location (str | torch.device | callable): As for
            :func:`torch.load`. Defaults to ``'cpu'``.
        trust (bool, optional): Load a full pickle (``weights_only=False``;
            it may run code), with one warning line per process. None:
            ``MMAPT_TRUST_CHECKPOINTS=1`` decides.
        mmap (bool): Map the tensors of a torch zip file instead of reading
            them (shapes and metadata at once; legacy files are read).

    Raises:
        CheckpointFileError: The file is missing (also a
            ``FileNotFoundError``), empty, truncated or not a checkpoint; the
            message names the file and what to do.
        UntrustedCheckpointError: The pickle names a global that a safe load
            does not allow; the message names it and the opt-in.
    """
    problem = checkpoint_file_problem(path)
    if problem is not None:
        if not osp.exists(path):
            raise CheckpointNotFoundError(problem)
        raise CheckpointFileError(problem)
    if trust is None:
        trust = trust_from_env()
    head = _read_head(path)
    try:
        if _is_safetensors(path, head, os.path.getsize(path)):
            from safetensors.torch import load_file
            return load_file(path, device=str(map_location or 'cpu'))
        return _torch_load(path, map_location, trust, mmap
                           and head.startswith(_ZIP_MAGIC))
    except _read_errors() as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise CheckpointFileError(
            f'{path}: not a readable checkpoint ({type(err).__name__}: '
            f'{reason[:200]}): {REDO}') from None


def save_checkpoint_file(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder
    (created if needed), renamed into place once complete: a full disk or
    an unwritable folder leaves no torn file under ``path``.

    Raises:
        CheckpointFileError: The file could not be written; the message
            names the file and the reason.
    """
    try:
        os.makedirs(osp.dirname(path) or '.', exist_ok=True)
        save_torch_atomically(obj, path)
    except OSError as err:
        raise CheckpointFileError(
            f'{path}: could not be written ({err.strerror or err}); nothing '
            'was left under that name: free space or choose another output '
            'path') from None


def save_output(obj, path: str) -> bool:
    """:func:`save_checkpoint_file` for the converters: a failure is one
    ``error:`` line on stderr and False."""
    try:
        save_checkpoint_file(obj, path)
    except CheckpointFileError as err:
        print(f'error: {err}', file=sys.stderr)
        return False
    return True
