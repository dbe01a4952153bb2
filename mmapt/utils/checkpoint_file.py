# Copyright (c) mmapt contributors. All rights reserved.
"""Reading checkpoint files with one clear line when they are broken.

A half-finished download or ``torch.save`` leaves a file that ``torch.load``
rejects with a zip-library traceback (``failed finding central directory``)
and safetensors with a header error. :func:`checkpoint_file_problem` looks at
the file's size and framing only (no tensor is read), so tools can reject a
missing, empty, truncated or foreign file before any slow work;
:func:`load_checkpoint_file` loads it and turns what the readers raise into a
:class:`CheckpointFileError` naming the file, the problem and what to do.
"""
import json
import os
import os.path as osp
import pickle
import struct
from typing import Optional

import torch

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


def load_checkpoint_file(path: str) -> dict:
    """A source checkpoint for the converters, on the CPU: ``.safetensors``
    or anything ``torch.load`` reads (full training dicts included, hence
    ``weights_only=False``: convert only files you trust).

    Raises:
        CheckpointFileError: The file is missing (also a
            ``FileNotFoundError``), empty, truncated or not a checkpoint; the
            message names the file and what to do.
    """
    problem = checkpoint_file_problem(path)
    if problem is not None:
        if not osp.exists(path):
            raise CheckpointNotFoundError(problem)
        raise CheckpointFileError(problem)
    try:
        if _is_safetensors(path, _read_head(path), os.path.getsize(path)):
            from safetensors.torch import load_file
            return load_file(path)
        return torch.load(path, map_location='cpu', weights_only=False)
    except _read_errors() as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ''
        raise CheckpointFileError(
            f'{path}: not a readable checkpoint ({type(err).__name__}: '
            f'{reason[:200]}): {REDO}') from None
