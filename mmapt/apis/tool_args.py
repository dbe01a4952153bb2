"""Command-line options several tools share, each declared once with one
help text and one default: the tokenizer tools' images, views, patch sizes,
thresholds and scorers (``visualize_patches``, ``calibrate_thresholds``,
``benchmark_tokenizer``), ``--json``, and the tokenizer they describe."""
import argparse
from typing import List, Optional, Sequence, Tuple

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


def add_config_arguments(parser: argparse.ArgumentParser,
                         checkpoint: str = 'none') -> None:
    """The positional ``config`` and, with ``checkpoint`` ``'required'`` or
    ``'optional'``, ``checkpoint`` after it."""
    if checkpoint not in ('none', 'required', 'optional'):
        raise ValueError("checkpoint must be 'none', 'required' or "
                         f"'optional', got {checkpoint!r}")
    parser.add_argument('config', help='config file (mmdet or mmseg)')
    if checkpoint == 'required':
        parser.add_argument('checkpoint', help='checkpoint file')
    elif checkpoint == 'optional':
        parser.add_argument(
            'checkpoint',
            nargs='?',
            help='checkpoint file (optional: without it, the weights the '
            'config initialises)')


def add_image_view_arguments(parser: argparse.ArgumentParser) -> None:
    """``path`` (an image or a folder) and the view a tool sees each image
    in: ``--canvas`` or ``--crop`` (:func:`mmapt.apis.views.prepare_view`;
    neither: the image as it is)."""
    parser.add_argument('path', help='an image file or a folder of images')
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        '--canvas',
        type=int,
        help='detection view: long side to N, pad to N x N')
    view.add_argument(
        '--crop',
        type=int,
        help='segmentation view: short side to N, centre crop')


def add_patch_arguments(parser: argparse.ArgumentParser,
                        thresholds: bool = True) -> None:
    """``--patch-sizes`` and (``thresholds``) ``--thresholds``, with the
    paper's detection setting as defaults."""
    parser.add_argument(
        '--patch-sizes',
        type=int,
        nargs='+',
        default=[16, 32, 64, 128],
        help='patch sides in pixels, smallest first')
    if thresholds:
        add_thresholds_argument(parser)


def add_thresholds_argument(parser: argparse.ArgumentParser) -> None:
    """``--thresholds``: one per merged scale (patch sizes after the
    first)."""
    parser.add_argument(
        '--thresholds',
        type=float,
        nargs='*',
        default=[2.0, 2.0, 0.3],
        help='score thresholds, one per patch size after the first '
        '(default: 2 2 0.3)')


def add_num_images_argument(parser: argparse.ArgumentParser,
                            default: Optional[int] = None) -> None:
    """``--num-images``: only the first N images of the input."""
    parser.add_argument(
        '--num-images',
        type=int,
        default=default,
        help='use the first N images' +
        ('' if default is None else f' (default {default})'))


def add_scorer_checkpoint_argument(parser: argparse.ArgumentParser, *aliases:
                                   str) -> None:
    """``--scorer-checkpoint`` (and ``aliases``, a tool's former names):
    the weights of a ``learned`` scorer, as ``args.scorer_checkpoint``."""
    parser.add_argument(
        '--scorer-checkpoint',
        *aliases,
        dest='scorer_checkpoint',
        help='weights of the learned scorer: a checkpoint of tools/train.py '
        'on a scorer-distiller config, or a detector / segmentor '
        'checkpoint holding backbone.apt_scorer.*')


def add_json_argument(parser: argparse.ArgumentParser,
                      per_image: bool = False) -> None:
    """``--json``: the result as one JSON object on the last line, or
    (``per_image``) one JSON line per image in place of the table."""
    parser.add_argument(
        '--json',
        action='store_true',
        help='print one JSON object per image instead of a table'
        if per_image else 'print one JSON object as the last line')


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
