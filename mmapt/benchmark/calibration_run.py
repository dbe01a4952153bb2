"""One calibration over an image folder, as
``tools/analysis/calibrate_thresholds.py`` runs it: score maps once per image
and scorer, every candidate setting swept over them, and (with a trained
model) each setting's feature drift.

:func:`calibrate_folder` reads the tool's parsed command line (``args``:
``path``, ``canvas``, ``crop``, ``patch_sizes``, ``reference``,
``target_keep``, ``scorers``, ``keep_ratios``, ``plot``, ``config``,
``checkpoint``, ``max_drift``, ``trust_checkpoint``, ``entropy_bins``).
"""
import statistics
from argparse import Namespace
from typing import Dict, List, Tuple

from mmapt.apis.image_folder import ImageFolder
from mmapt.apis.tool_args import tokenizer_and_images
from mmapt.apis.views import normalise, prepare_view
from mmapt.benchmark.calibration import (keep_ratios, measure_drift,
                                         plot_keep_ratios, quantiles,
                                         recommend, reference_for,
                                         sweep_settings, without_per_image)
from mmapt.tokenizer import PatchTokenizer


def scorer_tokenizers(
    args: Namespace
) -> Tuple[Dict[str, PatchTokenizer], Dict[str, List[float]]]:
    """A tokenizer per scorer of ``args.scorers`` at its reference
    thresholds, and those references."""
    num_thresholds = len(args.patch_sizes) - 1
    tokenizers: Dict[str, PatchTokenizer] = {}
    references: Dict[str, List[float]] = {}
    for scorer in args.scorers:
        references[scorer] = reference_for(scorer, num_thresholds,
                                           args.reference)
        tokenizers[scorer], _ = tokenizer_and_images(
            args.path,
            args.patch_sizes,
            references[scorer],
            args.entropy_bins,
            scorer=scorer)
    if args.target_keep is not None and any(t <= 0
                                            for ref in references.values()
                                            for t in ref):
        raise ValueError('--reference thresholds must be positive to be '
                         'scaled')
    return tokenizers, references


def calibrate_folder(
        args: Namespace) -> Tuple[dict, PatchTokenizer, ImageFolder]:
    """Calibrate on every readable image of ``args.path``.

    Returns:
        tuple: The result (what the tool prints; the first scorer's
        threshold search is its headline answer), the first scorer's
        tokenizer, and the folder (its skipped files).

    Raises:
        ValueError: A bad setting or an image the canvas cannot take.
        ImageReadError: No image of the folder could be read.
    """
    tokenizers, references = scorer_tokenizers(args)
    first = tokenizers[args.scorers[0]]
    scores = {name: [] for name in args.scorers}
    grids, views = [], []
    folder = ImageFolder(args.path, desc='calibrate_thresholds')
    for _, image in folder:
        view = prepare_view(image, args.canvas, args.crop, first.largest_patch)
        batch = normalise([view])
        first.check_input_size(*batch.shape[-2:])
        grids.append(first.grid_size(*batch.shape[-2:]))
        for name, tokenizer in tokenizers.items():
            scores[name].append(tokenizer.score_maps(batch))
        if args.checkpoint is not None:
            views.append(view)
    folder.check_some_read()

    settings = sweep_settings(scores, references, grids, first.patch_size,
                              args.target_keep, args.keep_ratios or (),
                              args.entropy_bins)
    if args.checkpoint is not None:
        measure_drift(args.config, args.checkpoint, views, settings,
                      first.patch_sizes, args.trust_checkpoint)

    name = args.scorers[0]
    result = dict(
        images=len(folder.read),
        skipped=[path for path, _ in folder.skipped],
        patch_sizes=list(first.patch_sizes),
        scorer=name,
        reference=references[name],
        reference_keep=round(
            statistics.mean(
                keep_ratios(scores[name], references[name], grids)), 4))
    if args.target_keep is not None:
        search = settings[0]
        result.update(
            target_keep=args.target_keep,
            thresholds=search['thresholds'],
            achieved_keep=search['keep_mean'])
    result['score_quantiles_10_25_50_75_90'] = {
        scorer: quantiles(scores[scorer], first.patch_sizes)
        for scorer in args.scorers
    }
    result['entropy_quantiles_10_25_50_75_90'] = \
        result['score_quantiles_10_25_50_75_90'].get('entropy')
    result['settings'] = [without_per_image(s) for s in settings]
    if args.checkpoint is not None:
        best = recommend(settings, args.max_drift)
        result['max_drift'] = args.max_drift
        result['recommended'] = None if best is None else \
            without_per_image(best)
    if args.plot and settings:
        plot_keep_ratios(settings, args.plot)
        result['plot'] = args.plot
    return result, first, folder
