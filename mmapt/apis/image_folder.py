"""Read a user's images robustly, for the folder tools and the demo.

One unreadable file (empty, truncated, not an image) must not stop a tool
that was given a folder: :class:`ImageFolder` skips it with a warning,
processes the rest, reports what it skipped, and shows progress on stderr
(so that ``--json`` output on stdout stays clean). Kept free of
mmdet/mmseg, like :mod:`.views`.
"""
import os
import sys
from contextlib import contextmanager
from typing import IO, Callable, Iterator, List, Optional, Tuple

import numpy as np
from rich.console import Console
from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from .images import ImageReadError, list_images, read_image


@contextmanager
def progress_bar(total: int,
                 desc: str,
                 stream: Optional[IO] = None,
                 show: bool = True) -> Iterator[Callable[..., None]]:
    """A ``desc: done/total`` bar (rich) on ``stream`` (default stderr).

    Yields ``advance(note=None)``, to call once per step; a ``note`` (a
    warning) is printed on its own line above the bar. On a terminal the
    bar is redrawn in place; elsewhere (logs, CI, a captured stream) rich
    prints its final line only. Standard output is left alone, so that
    ``--json`` lines printed meanwhile stay on stdout. ``show=False``: notes
    only, no bar.
    """
    console = Console(file=stream if stream is not None else sys.stderr)

    def say(note: Optional[str] = None) -> None:
        if note is not None:
            console.print(
                note,
                markup=False,
                highlight=False,
                emoji=False,
                soft_wrap=True)

    if not show:
        yield say
        return
    columns = (TextColumn(
        '{task.description}: {task.completed}/{task.total}',
        markup=False), BarColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(
            *columns,
            console=console,
            redirect_stdout=False,
            redirect_stderr=False) as bar:
        task = bar.add_task(desc, total=max(int(total), 0))

        def advance(note: Optional[str] = None) -> None:
            say(note)
            bar.advance(task)

        yield advance


class ImageFolder:
    """The images of a file or a folder, read one at a time.

    Iterating yields ``(path, image)`` for every readable file; unreadable
    ones print ``warning: skipping ...`` on stderr and are collected in
    :attr:`skipped`. Progress goes to stderr as well.

    Args:
        path (str): An image file or a folder of images
            (:func:`.images.list_images`).
        desc (str): Progress label. Defaults to ``'images'``.
        progress (bool): Show progress. Defaults to True.
        stream (IO, optional): Warnings and progress. Defaults to stderr.

    Raises:
        FileNotFoundError: the path is neither an image nor a folder with
            images.
    """

    def __init__(self,
                 path: str,
                 desc: str = 'images',
                 progress: bool = True,
                 stream: Optional[IO] = None) -> None:
        self.paths: List[str] = list_images(path)
        self.desc = desc
        self.progress = progress
        self.stream = stream if stream is not None else sys.stderr
        self.skipped: List[Tuple[str, str]] = []
        self.read: List[str] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Tuple[str, np.ndarray]]:
        self.skipped, self.read = [], []
        with progress_bar(
                len(self.paths), self.desc, self.stream,
                self.progress) as advance:
            for path in self.paths:
                try:
                    image = read_image(path)
                except ImageReadError as err:
                    self.skipped.append((path, str(err)))
                    advance(f'warning: skipping {err}')
                else:
                    self.read.append(path)
                    yield path, image
                    advance()

    def summary(self) -> str:
        """One line: how many files were read and which were skipped."""
        line = f'{len(self.read)} of {len(self.paths)} images read'
        if self.skipped:
            names = ', '.join(os.path.basename(p) for p, _ in self.skipped)
            line += f'; skipped {len(self.skipped)} unreadable: {names}'
        return line

    def check_some_read(self) -> None:
        """Raise :class:`ImageReadError` when not a single file was read."""
        if not self.read:
            raise ImageReadError(
                f'none of the {len(self.paths)} image files could be read '
                f'({self.summary()}); see the warnings above')
