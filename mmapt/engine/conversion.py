# Copyright (c) mmapt contributors. All rights reserved.
"""The shared command line of ``tools/model_converters/``.

Every converter reads one checkpoint (safely, unless trusted), converts it
with a function of :mod:`mmapt.converters` and writes one
``{'state_dict': ..., 'meta': ...}`` file. The steps around the conversion,
and the way a failure is reported (one ``error:`` line, exit status 1), are
the same for all of them and live here.
"""
import argparse
import sys
from typing import Any, Callable, Iterable, Optional

from mmapt.checkpoints.checkpoint_file import (CheckpointFileError,
                                               load_checkpoint_file,
                                               save_output)
from mmapt.converters import ConversionError
from .checkpoint import add_trust_argument, check_output_file
from .preflight import UnwritableOutputError


def converter_parser(description: str,
                     src_help: str) -> argparse.ArgumentParser:
    """A parser with the converters' common arguments: ``src``, ``dst``
    and ``--trust-checkpoint``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=src_help)
    parser.add_argument('dst', help='output .pth')
    add_trust_argument(parser)
    return parser


def convert_file(args: argparse.Namespace,
                 convert: Callable[[Any], Any]) -> Optional[Any]:
    """``convert(loaded args.src)``, after checking that ``args.dst`` can be
    written (before the slow part). A bad file or conversion prints one
    ``error:`` line naming the file and gives None."""
    try:
        check_output_file(args.dst)
        return convert(
            load_checkpoint_file(args.src, trust=args.trust_checkpoint))
    except (CheckpointFileError, UnwritableOutputError) as err:
        print(f'error: {err}', file=sys.stderr)  # the message names the file
    except ConversionError as err:
        print(f'error: {args.src}: {err}', file=sys.stderr)
    return None


def print_dropped(keys: Iterable[str]) -> None:
    """One ``dropped KEY`` line per source key the conversion left out."""
    for key in keys:
        print(f'dropped {key}')


def save_converted(state: dict, meta: dict, dst: str, note: str = '') -> bool:
    """Write ``{'state_dict': state, 'meta': meta}`` to ``dst`` and say so
    (False, after an ``error:`` line, when it cannot be written)."""
    if not save_output(dict(state_dict=state, meta=meta), dst):
        return False
    print(f'saved {len(state)} tensors to {dst}{note}')
    return True
