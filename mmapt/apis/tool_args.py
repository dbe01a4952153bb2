"""Command-line options the tokenizer tools share (``visualize_patches``,
``calibrate_thresholds``), and the tokenizer they describe."""
import argparse
from typing import List, Sequence, Tuple

from mmapt.tokenizer import PatchTokenizer
from .images import list_images


def tokenizer_and_images(path: str, patch_sizes: Sequence[int],
                         thresholds: Sequence[float], entropy_bins: int,
                         **tokenizer_args) -> Tuple[PatchTokenizer, List[str]]:
    """Validate a tool's tokenizer settings and list its images.

    ``tokenizer_args``: more :class:`PatchTokenizer` arguments (``scorer``,
    ``keep_ratio``, ``token_budget``, ``threshold_floor``).

    Raises ValueError / FileNotFoundError with the message a tool prints.
    """
    tokenizer = PatchTokenizer(
        patch_sizes[0],
        thresholds,
        entropy_bins=entropy_bins,
        patch_sizes=patch_sizes,
        **tokenizer_args)
    return tokenizer, list_images(path)


def add_entropy_bins_argument(parser: argparse.ArgumentParser) -> None:
    """``--entropy-bins`` (histogram bins of the entropy scorer), with the
    tools' former name ``--bins`` kept as a hidden alias."""
    parser.add_argument(
        '--entropy-bins',
        type=int,
        default=512,
        help='histogram bins over [0, 255] of the entropy maps')
    parser.add_argument(
        '--bins',
        dest='entropy_bins',
        type=int,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS)


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """The tools' patch-scorer and budget options (and ``--entropy-bins``)."""
    parser.add_argument(
        '--scorer',
        default='entropy',
        help='patch scorer of mmapt.registry.PATCH_SCORERS: entropy '
        '(default), contrast, gradient')
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        '--keep-ratio',
        type=float,
        help='budget mode: keep this fraction of the plain grid\'s tokens '
        'in every image')
    budget.add_argument(
        '--token-budget',
        type=int,
        help='budget mode: this many content tokens in every image')
    parser.add_argument(
        '--threshold-floor',
        action='store_true',
        help='budget mode: the thresholds\' splits come first')
    add_entropy_bins_argument(parser)


def scorer_arguments(args: argparse.Namespace) -> dict:
    """:class:`PatchTokenizer` arguments of :func:`add_scorer_arguments`."""
    return dict(
        scorer=args.scorer,
        keep_ratio=args.keep_ratio,
        token_budget=args.token_budget,
        threshold_floor=args.threshold_floor)
