"""Read a user's images robustly, for the folder tools and the demo.

One unreadable file (empty, truncated, not an image) must not stop a tool
that was given a folder: :class:`ImageFolder` skips it with a warning,
processes the rest, reports what it skipped, and shows progress on stderr
(so that ``--json`` output on stdout stays clean). Kept free of
mmdet/mmseg, like :mod:`.prepare`.
"""
import os
import sys
import time
from typing import IO, Iterator, List, Optional, Tuple

import numpy as np

from .prepare import list_images, load_rgb


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message is one line that
    names the file and the problem."""


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of ``path`` (see :func:`.prepare.load_rgb`).

    Raises:
        ImageReadError: the file is missing or a directory, empty,
            truncated, not an image the pipeline's decoder reads, or has no
            pixels.
    """
    from mmapt.apis.images import ImageDecodeError  # the floor above
    if os.path.isdir(path):
        raise ImageReadError(f'{path} is a directory, not an image file: '
                             'give one image file')
    if not os.path.isfile(path):
        raise ImageReadError(f'{path}: no such file')
    if os.path.getsize(path) == 0:
        raise ImageReadError(f'{path}: empty file (0 bytes); re-export or '
                             'remove it')
    try:
        image = load_rgb(path)
    except ImageDecodeError as err:
        raise ImageReadError(f'{err}; export it again or re-save it as PNG '
                             'or JPEG') from None
    except (OSError, ValueError, SyntaxError) as err:
        # .npy loading: ValueError (not an array file) or OSError.
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(
            f'{path}: cannot be read ({message}); the file may be truncated '
            'or corrupt') from None
    if image.size == 0:
        raise ImageReadError(f'{path}: the image has no pixels '
                             f'({image.shape[0]} x {image.shape[1]})')
    return image


class Progress:
    """``desc: done/total`` on ``stream`` (stderr by default).

    On a terminal the line is rewritten in place; elsewhere (logs, CI) it
    is printed about ten times in all, so that a long run shows it is alive
    without flooding the log.

    Args:
        total (int): Number of steps.
        desc (str): What is counted, printed first.
        stream (IO, optional): Where to write. Defaults to ``sys.stderr``.
    """

    def __init__(self,
                 total: int,
                 desc: str = 'images',
                 stream: Optional[IO] = None) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self.every = max(1, self.total // 10)
        self.inplace = bool(getattr(self.stream, 'isatty', lambda: False)())

    def update(self, steps: int = 1) -> None:
        self.done += steps
        if not (self.inplace or self.done % self.every == 0
                or self.done == self.total):
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        line = (f'{self.desc}: {self.done}/{self.total} '
                f'({elapsed:.0f} s, eta {eta:.0f} s)')
        end = '\r' if self.inplace and self.done < self.total else '\n'
        self.stream.write(line + end)
        self.stream.flush()


class ImageFolder:
    """The images of a file or a folder, read one at a time.

    Iterating yields ``(path, image)`` for every readable file; unreadable
    ones print ``warning: skipping ...`` on stderr and are collected in
    :attr:`skipped`. Progress goes to stderr as well.

    Args:
        path (str): An image file or a folder of images
            (:func:`.prepare.list_images`).
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
        bar = Progress(len(self.paths), self.desc, self.stream) \
            if self.progress else None
        for path in self.paths:
            try:
                image = read_image(path)
            except ImageReadError as err:
                self.skipped.append((path, str(err)))
                self.stream.write(f'warning: skipping {err}\n')
            else:
                self.read.append(path)
                yield path, image
            if bar is not None:
                bar.update()

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
