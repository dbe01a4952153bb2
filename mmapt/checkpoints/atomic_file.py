# Copyright (c) mmapt contributors. All rights reserved.
"""Files that are either whole or absent, whenever the writer fails.

A file is written to a hidden temporary name in its own folder
(``.NAME.tmp``: not matched by ``*.pth`` globs), flushed to disk and renamed
over ``NAME`` (``os.replace``, atomic on POSIX). When the write fails (a
full disk, an exception, Ctrl-C) the temporary file is removed and ``NAME``
keeps its old content, or stays absent. Only a process killed outright can
leave a ``.NAME.tmp``; :func:`remove_temp_files` clears them.
"""
import glob
import os
import os.path as osp
from contextlib import contextmanager
from typing import Callable, Iterator, List

TMP_SUFFIX = '.tmp'


def temp_name(path: str) -> str:
    """Hidden sibling of ``path``: not matched by ``iter_*.pth`` globs."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{TMP_SUFFIX}')


def flush_to_disk(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextmanager
def removed_on_failure(path: str) -> Iterator[str]:
    """Yield ``path``; remove it if the block raises (anything, Ctrl-C
    included), then re-raise."""
    try:
        yield path
    except BaseException:
        remove_quietly(path)
        raise


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` writes the file's content to ``tmp``; it becomes
    ``path`` only once complete."""
    tmp = temp_name(path)
    with removed_on_failure(tmp):
        write(tmp)
        flush_to_disk(tmp)
        os.replace(tmp, path)


def replace_atomically(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either its old content
    or all of ``data``, whenever the process dies."""

    def write(tmp: str) -> None:
        with open(tmp, 'wb') as f:
            f.write(data)

    write_atomically(path, write)


def save_torch_atomically(obj, path: str) -> None:
    """``torch.save(obj, path)``, never leaving a torn ``path``."""
    import torch
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def remove_temp_files(folder: str) -> List[str]:
    """Remove the temporary files a killed writer left in ``folder``;
    returns their paths."""
    pattern = osp.join(glob.escape(folder), f'.*{TMP_SUFFIX}')
    stale = glob.glob(pattern)
    for path in stale:
        remove_quietly(path)
    return stale
