"""Token buckets fitted to a user's own images.

The ``'auto'`` buckets (25/50/75/100% of the canvas) are coarse: an image
with 78% of the tokens runs the 100% bucket, i.e. every token of the plain
model plus the tokenizer. Fitting the buckets to the packed-token counts of
calibration images (:func:`~mmapt.tokenizer.layout.fit_pack_sizes`, exact)
puts them where the images are. The counts come from the backbone's own
tokenizer on the images as the runtime prepares them
(:func:`~mmapt.deploy.runtime.prepare_image`), through the forward the
token-count graph exports: no block runs.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .graphs import TokenCountGraph, apt_adapter
from .runtime import prepare_image


@dataclass
class BucketFit:
    """Buckets fitted to calibration images, and what they cost there.

    Attributes:
        buckets (tuple[int, ...]): The fitted pack sizes, ascending; the
            largest is the canvas's maximum (nothing is ever capped).
        packed_tokens (dict[str, int]): Packed tokens (prefix included) of
            every calibration image, by path.
        largest (int): The canvas's maximum: the plain model's tokens
            (prefix included), the largest bucket.
        skipped (list[str]): Files that could not be read (one line each).
    """
    buckets: Tuple[int, ...]
    packed_tokens: Dict[str, int]
    largest: int
    skipped: List[str] = field(default_factory=list)

    def summary(self, auto: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """The fit on its own images: :func:`token_report` of the fitted
        buckets (and of ``auto``, e.g. the ``'auto'`` buckets, for
        comparison); for the manifest and the tool's output."""
        counts = list(self.packed_tokens.values())
        out = dict(
            buckets=list(self.buckets),
            images=len(counts),
            fitted=token_report(counts, self.buckets, self.largest))
        if auto is not None:
            out['auto'] = token_report(counts, auto, self.largest)
        return out


def token_report(packed_tokens: Sequence[int], buckets: Sequence[int],
                 largest: int) -> Dict[str, Any]:
    """Tokens the images run in ``buckets`` (each in the bucket
    :func:`~mmapt.tokenizer.layout.choose_pack_size` gives it) against
    their exact counts and the plain model's ``largest`` per image."""
    from mmapt.tokenizer.layout import choose_pack_size
    counts = [int(c) for c in packed_tokens]
    run = sum(choose_pack_size(c, buckets) for c in counts)
    exact = sum(counts)
    plain = largest * len(counts)
    return dict(
        buckets=sorted(buckets),
        run_tokens=run,
        exact_tokens=exact,
        plain_tokens=plain,
        padded_share=round((run - exact) / run, 4) if run else 0.0,
        run_vs_plain=round(run / plain, 4) if plain else 0.0)


def count_packed_tokens(backbone: nn.Module, images: Sequence[Any],
                        manifest_input: Dict[str, Any]) -> List[int]:
    """Packed tokens (prefix included) the backbone's tokenizer gives each
    (H, W, 3) uint8 RGB image, placed on the canvas and normalised as the
    runtime does (``manifest_input``: the ``input`` entry of a manifest:
    shape, mean, std, channel_order)."""
    if manifest_input['shape'][0] != 1:
        raise ValueError(
            'buckets are fitted to single images: export with --batch-size '
            f'1, not {manifest_input["shape"][0]}, or give --bucket sizes')
    graph = TokenCountGraph(backbone)
    counts = []
    with torch.no_grad():
        for rgb in images:
            x = prepare_image(rgb, dict(input=manifest_input))
            counts.append(int(graph(torch.from_numpy(x))[0]))
    return counts


def count_folder(backbone: nn.Module,
                 image_path: str,
                 manifest_input: Dict[str, Any],
                 desc: str = 'counting tokens',
                 progress: bool = True) -> Tuple[Dict[str, int], List[str]]:
    """:func:`count_packed_tokens` of every readable image of a file or
    folder, by path, and the one-line reasons of the files skipped (with a
    warning, :class:`~mmapt.apis.image_folder.ImageFolder`); ValueError
    when none is readable, FileNotFoundError when there is no image."""
    from mmapt.apis.image_folder import ImageFolder
    folder = ImageFolder(image_path, desc=desc, progress=progress)
    counts = {
        path: count_packed_tokens(backbone, [rgb], manifest_input)[0]
        for path, rgb in folder
    }
    if not counts:
        raise ValueError(f'no readable image in {image_path}: '
                         f'{folder.summary()}')
    return counts, [message for _, message in folder.skipped]


def fit_buckets(backbone: nn.Module,
                image_path: str,
                num_buckets: int,
                manifest_input: Dict[str, Any],
                progress: bool = True) -> BucketFit:
    """Buckets fitted to the images of ``image_path`` (a file or a folder).

    Args:
        backbone (nn.Module): The config's built APT backbone (its
            tokenizer scores the images: a learned scorer with its weights).
        image_path (str): Calibration images; unreadable files are skipped
            with a warning.
        num_buckets (int): Number of buckets K >= 1, the largest included.
        manifest_input (dict): The export's input (shape, mean, std,
            channel_order), as ``deploy.json`` records it.
        progress (bool): Progress on stderr. Defaults to True.

    Raises:
        ValueError: a plain backbone, K < 1, a batch size above 1, or no
            readable image.
        FileNotFoundError: no image at ``image_path``.
    """
    from mmapt.tokenizer.layout import fit_pack_sizes
    largest = canvas_maximum(backbone, manifest_input)
    # Checked before the images are read (a wrong K fails at once).
    fit_pack_sizes([largest], num_buckets, largest)
    counts, skipped = count_folder(
        backbone, image_path, manifest_input, progress=progress)
    return BucketFit(
        buckets=fit_pack_sizes(counts.values(), num_buckets, largest),
        packed_tokens=counts,
        largest=largest,
        skipped=skipped)


def canvas_maximum(backbone: nn.Module, manifest_input: Dict[str, Any]) -> int:
    """The most packed tokens an image of the export's canvas can have
    (the largest bucket); ValueError naming the fix for a plain
    backbone."""
    from mmapt.tokenizer.layout import max_pack_size
    adapter = apt_adapter(backbone)
    if adapter is None:
        raise ValueError(
            f'{type(backbone).__name__} is a plain backbone: it runs every '
            'token, so it has no buckets to fit; fit buckets for an APT '
            'config (e.g. configs/apt_vitdet_coco.py)')
    tokenizer = adapter.tokenizer
    _, _, height, width = manifest_input['shape']
    return max_pack_size(1, tokenizer.grid_size(height, width),
                         tokenizer.num_prefix_tokens)


def fit_report(backbone: nn.Module,
               image_path: str,
               num_buckets: int,
               manifest_input: Dict[str, Any],
               held_out: Optional[str] = None) -> Dict[str, Any]:
    """:func:`fit_buckets` and what the buckets cost: the tokens the
    calibration images (and the ``held_out`` ones, not used for the fit)
    run in them and in the ``'auto'`` buckets, each image's count, and the
    config line for PyTorch's static mode (``export_onnx.py
    --fit-buckets`` prints it and ``deploy.json`` keeps it)."""
    from mmapt.tokenizer.layout import default_pack_sizes
    fit = fit_buckets(backbone, image_path, num_buckets, manifest_input)
    tokenizer = apt_adapter(backbone).tokenizer
    auto = default_pack_sizes(
        1, tokenizer.grid_size(*manifest_input['shape'][2:]),
        tokenizer.num_prefix_tokens)
    report = dict(
        fit.summary(auto),
        num_buckets=num_buckets,
        images=image_path,
        packed_tokens=fit.packed_tokens,
        pack_size_config=pack_size_setting(fit.buckets))
    if held_out:
        counts, _ = count_folder(backbone, held_out, manifest_input,
                                 'held-out images')
        report['held_out'] = dict(
            images=held_out,
            packed_tokens=counts,
            fitted=token_report(counts.values(), fit.buckets, fit.largest),
            auto=token_report(counts.values(), auto, fit.largest))
    return report


def pack_size_setting(buckets: Sequence[int]) -> str:
    """The config lines that make the PyTorch model's static mode use
    ``buckets`` (e.g. for CUDA graphs), as the tool prints them."""
    return ('model = dict(backbone=dict(pack_size=['
            f'{", ".join(str(b) for b in sorted(buckets))}]))')


def matched_keep_ratio(backbone: nn.Module,
                       image_path: str,
                       manifest_input: Dict[str, Any],
                       progress: bool = True) -> Dict[str, Any]:
    """The keep ratio whose budget mode runs, on every image, the mean
    token count that the backbone's thresholds give the images of
    ``image_path`` (content tokens over the plain grid's cells).

    Budget mode at that ratio is one bucket (every image has the same
    count), where threshold mode spreads the same mean over several and
    pads each image to its bucket. On the toy sets budget and threshold
    mode at the same mean token count kept the same accuracy
    (docs/scorers_eval.md); check it on your own data.

    Raises:
        ValueError: a plain backbone, a batch size above 1, one already in
            budget mode, or no readable image.
    """
    adapter = apt_adapter(backbone)
    if adapter is None:
        raise ValueError(
            f'{type(backbone).__name__} is a plain backbone: it keeps every '
            'token; match the thresholds of an APT config')
    if manifest_input['shape'][0] != 1:
        raise ValueError(
            'the thresholds are matched on single images: export with '
            f'--batch-size 1, not {manifest_input["shape"][0]}, or set '
            'model.backbone.keep_ratio yourself')
    tokenizer = adapter.tokenizer
    if tokenizer.budget_mode:
        raise ValueError(
            'the config is already in budget mode (keep_ratio / '
            'token_budget set): there are no thresholds to match; drop '
            '--match-thresholds, or the budget from the config')
    counts, skipped = count_folder(backbone, image_path, manifest_input,
                                   'threshold tokens', progress)
    prefix = tokenizer.num_prefix_tokens
    grid = tokenizer.grid_size(*manifest_input['shape'][2:])
    cells = grid[0] * grid[1]
    content = [c - prefix for c in counts.values()]
    keep = sum(content) / (len(content) * cells)
    # Four decimals, rounded up so that rounding never lowers the budget;
    # the count itself is whole splits, up to 2 tokens under the budget.
    keep_ratio = min(1.0, math.ceil(keep * 1e4) / 1e4)
    return dict(
        images=image_path,
        keep_ratio=keep_ratio,
        threshold_keep=dict(
            mean=round(keep, 4),
            min=round(min(content) / cells, 4),
            max=round(max(content) / cells, 4)),
        packed_tokens=counts,
        skipped=skipped)
