"""Calibrate APT thresholds or token budgets on your images, without labels.

Score maps are computed once per image and scorer; every candidate setting
then only re-runs the (cheap) patch selection. Threshold search keeps the
*shape* of a reference threshold vector (the paper's detection setting by
default for ``entropy``, equal thresholds for the other scorers, whose
scores are per-pixel quantities comparable across scales) and scales it
until the mean keep ratio over the images meets the target::

    python tools/analysis/calibrate_thresholds.py data/photos --canvas 1536 \
        --patch-sizes 16 32 64 128 --reference 2 2 0.3 --target-keep 0.7

Several scorers and budget-mode settings side by side, with the keep-ratio
distribution of every setting as a plot (box per setting)::

    python tools/analysis/calibrate_thresholds.py data/photos --canvas 1536 \
        --scorers entropy contrast gradient --target-keep 0.7 \
        --keep-ratios 0.5 0.7 --plot outputs/keep_ratios.png

Feature drift (needs a trained plain model and its config; still no
labels): the APT backbone (the plain weights, APT layers zero-initialised)
and the plain one run on every image, and the tool reports how far APT's
output features move from the plain model's (relative error
``|F_apt - F| / |F|`` and the mean per-position cosine) for every scorer
and keep ratio, and recommends the cheapest setting within ``--max-drift``::

    python tools/analysis/calibrate_thresholds.py data/toy_coco/val2017 \
        --config configs/toy/toy_eva02_det.py \
        --checkpoint work_dirs/toy_eva02_det/iter_300.pth --canvas 256 \
        --scorers entropy gradient --keep-ratios 0.5 0.6 0.7 0.8 \
        --max-drift 0.2

It also prints the keep ratio of the reference itself and, per scale, the
quantiles of the candidate patches' scores, to see where thresholds bite.
Entropy thresholds above ~6 bits cost accuracy in the paper that
fine-tuning did not recover: the tool warns when the answer goes there.
Unreadable files of a folder are skipped with a warning; progress goes to
stderr, so ``--json`` output stays clean.
"""
import argparse
import json
import math
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.preflight import InputError, check_writable_file
from mmapt.tokenizer import PatchTokenizer, build_layout, select_patches
from mmapt.tokenizer.image_folder import ImageFolder, ImageReadError, Progress
from mmapt.tokenizer.prepare import (add_entropy_bins_argument, normalise,
                                     prepare_view, tokenizer_and_images)

MAX_SAFE_THRESHOLD = 6.0
DEFAULT_ENTROPY_REFERENCE = (2.0, 2.0, 0.3)
DRIFT_KEEP_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('path', help='an image file or a folder of images')
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        '--canvas', type=int, help='detection view (pad to N x N)')
    view.add_argument(
        '--crop', type=int, help='segmentation view (crop N x N)')
    parser.add_argument(
        '--patch-sizes', type=int, nargs='+', default=[16, 32, 64, 128])
    parser.add_argument(
        '--reference',
        type=float,
        nargs='+',
        help='threshold vector whose shape is kept (default: 2 2 0.3 for '
        'entropy with 4 patch sizes, equal thresholds otherwise)')
    parser.add_argument(
        '--target-keep',
        type=float,
        help='wanted mean keep ratio in (0, 1]: thresholds are searched '
        'for it')
    parser.add_argument(
        '--scorers',
        nargs='+',
        default=['entropy'],
        help='patch scorers to calibrate (mmapt.registry.PATCH_SCORERS): '
        'entropy (default), contrast, gradient')
    parser.add_argument(
        '--keep-ratios',
        type=float,
        nargs='+',
        help='budget-mode settings to compare (every image keeps this '
        'fraction of the plain grid\'s tokens)')
    parser.add_argument(
        '--plot', help='PNG of the keep-ratio distribution per setting')
    drift = parser.add_argument_group('feature drift (a trained model)')
    drift.add_argument('--config', help='config of the plain (or APT) model')
    drift.add_argument(
        '--checkpoint',
        help='trained checkpoint of that model (a converted '
        'or trained plain model; only the backbone is read)')
    drift.add_argument(
        '--max-drift',
        type=float,
        default=0.2,
        help='largest mean relative feature error to accept (default 0.2)')
    add_trust_argument(drift)
    add_entropy_bins_argument(parser)
    parser.add_argument('--json', action='store_true')
    return parser.parse_args(argv)


def keep_ratios(score_maps: Sequence[List[torch.Tensor]], thresholds,
                grids) -> List[float]:
    """Keep ratio per image for one threshold setting.

    Args:
        score_maps: per image, its score maps (one per scale above base).
        thresholds: one threshold per scale above base.
        grids: per image its base grid (rows, cols), or one grid for all.
    """
    if isinstance(grids, tuple):
        grids = [grids] * len(score_maps)
    ratios = []
    for maps, grid in zip(score_maps, grids):
        masks = select_patches(maps, thresholds, grid)
        layout = build_layout(masks, grid)
        ratios.append(float(layout.keep_ratio[0]))
    return ratios


def budget_keep_ratios(tokenizer: PatchTokenizer,
                       score_maps: Sequence[List[torch.Tensor]],
                       grids) -> List[float]:
    """Keep ratio per image for a budget-mode tokenizer."""
    ratios = []
    for maps, grid in zip(score_maps, grids):
        layout = build_layout(tokenizer.select(maps, grid), grid)
        ratios.append(float(layout.keep_ratio[0]))
    return ratios


def calibrate(score_maps,
              reference: Sequence[float],
              grids,
              target: float,
              steps: int = 40):
    """Largest-keep scale factor s with mean keep(s * reference) <= target.

    More merging can only lower the token count, so the mean keep ratio is
    non-increasing in s and a bisection finds the boundary.
    """

    def mean_keep(scale: float) -> float:
        return statistics.mean(
            keep_ratios(score_maps, [scale * t for t in reference], grids))

    low, high = 0.0, 1.0
    while mean_keep(high) > target:
        high *= 2
        if high > 1e6:
            raise ValueError(f'keep ratio {target} is out of reach: even '
                             f'thresholds x{high:g} keep more tokens')
    for _ in range(steps):
        mid = (low + high) / 2
        if mean_keep(mid) > target:
            low = mid
        else:
            high = mid
    return high, mean_keep(high)


def round_up(value: float, digits: int = 4) -> float:
    """``value`` rounded up to ``digits`` significant digits: the printed
    thresholds are the ones evaluated, and rounding up can only merge more,
    so the target stays met (a tiny threshold that merges exactly flat
    patches must not print as 0, which merges nothing)."""
    if value <= 0:
        return value
    step = 10**(math.floor(math.log10(value)) - digits + 1)
    return float(f'{math.ceil(value / step - 1e-9) * step:.{digits}g}')


def reference_for(scorer: str, num_thresholds: int,
                  given: Optional[Sequence[float]]) -> List[float]:
    if given is not None:
        return list(given)
    if scorer == 'entropy' and num_thresholds == 3:
        return list(DEFAULT_ENTROPY_REFERENCE)
    return [1.0] * num_thresholds


def distribution(ratios: Sequence[float]) -> dict:
    q = np.quantile(ratios, [0.1, 0.5, 0.9])
    return dict(
        keep_mean=round(statistics.mean(ratios), 4),
        keep_p10=round(float(q[0]), 4),
        keep_median=round(float(q[1]), 4),
        keep_p90=round(float(q[2]), 4),
        keep_min=round(min(ratios), 4),
        keep_max=round(max(ratios), 4))


def setting_label(setting: dict) -> str:
    if setting['mode'] == 'thresholds':
        values = ', '.join(f'{t:g}' for t in setting['thresholds'])
        return f'{setting["scorer"]} thr ({values})'
    return f'{setting["scorer"]} keep {setting["keep_ratio"]:g}'


def plot_keep_ratios(settings: Sequence[dict], path: str) -> None:
    """One box (and the points) per setting: the per-image keep ratios."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError('--plot needs matplotlib: pip install '
                           'matplotlib') from err
    labels = [setting_label(s) for s in settings]
    values = [s['per_image'] for s in settings]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(settings) + 1), 4.0))
    ax.boxplot(values, whis=(5, 95), showfliers=False)
    rng = np.random.default_rng(0)
    for i, v in enumerate(values, 1):
        ax.scatter(
            i + rng.uniform(-0.15, 0.15, len(v)), v, s=6, alpha=0.5, zorder=3)
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(labels, rotation=30, ha='right', fontsize=8)
    ax.set_ylabel('keep ratio per image (tokens / plain tokens)')
    ax.set_ylim(0, 1.05)
    ax.grid(axis='y', alpha=0.3)
    ax.set_title(f'keep-ratio distribution over {len(values[0])} images')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------- feature drift
def build_backbones(config: str,
                    checkpoint: str,
                    trust: Optional[bool] = None):
    """(plain backbone, APT backbone kwargs, mean, std) of a config, with the
    checkpoint's backbone weights loaded into the plain one."""
    from mmengine.config import Config

    import mmapt.models  # noqa: F401  (registers the backbones)
    from mmapt.converters import load_checkpoint_file, unwrap_state_dict
    from mmapt.registry import MODELS
    cfg = Config.fromfile(config)
    kwargs = dict(cfg.model.backbone)
    kind = kwargs.pop('type')
    apt_only = ('thresholds', 'entropy_bins', 'mean', 'std', 'scorer',
                'token_budget', 'keep_ratio', 'threshold_floor')
    if kind.startswith('APT'):
        kind = kind[3:]
    for key in apt_only:
        kwargs.pop(key, None)
    kwargs['init_cfg'] = None
    pre = cfg.model.get('data_preprocessor', {})
    while 'preprocessor' in pre:  # APTDataPreprocessor wraps the usual one
        pre = pre['preprocessor']
    mean = tuple(pre.get('mean', (123.675, 116.28, 103.53)))
    std = tuple(pre.get('std', (58.395, 57.12, 57.375)))
    if MODELS.get('APT' + kind) is None:
        raise ValueError(f'backbone {kind!r} of {config} has no APT '
                         f'version (APT{kind} is not registered)')
    plain = MODELS.build(dict(type=kind, **kwargs))
    # APT layers (of an APT-trained checkpoint) go to the APT backbone only.
    state = unwrap_state_dict(load_checkpoint_file(checkpoint, trust=trust))
    missing, unexpected = plain.load_state_dict(
        {
            k: v
            for k, v in state.items() if not k.startswith('apt_')
        },
        strict=False)
    if missing or unexpected:
        raise ValueError(
            f'checkpoint {checkpoint} does not fit the {kind} backbone of '
            f'{config}: {len(missing)} missing keys (e.g. '
            f'{missing[:2]}), {len(unexpected)} unexpected (e.g. '
            f'{unexpected[:2]}); give the config the model was trained with')
    plain.eval()
    return plain, dict(type='APT' + kind, **kwargs), mean, std, state


def build_apt(MODELS, apt_kwargs: dict, state: dict, patch_sizes, mean, std,
              **mode):
    """An APT backbone with the plain weights (APT layers zero-init)."""
    thresholds = mode.pop('thresholds', None)
    if thresholds is None:
        thresholds = [1.0] * (len(patch_sizes) - 1)
    backbone = MODELS.build(
        dict(
            apt_kwargs,
            thresholds=tuple(thresholds),
            mean=mean,
            std=std,
            **mode))
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    bad = [k for k in missing if not k.startswith('apt_')]
    if bad or unexpected:
        raise ValueError(f'the APT backbone does not take the plain weights: '
                         f'missing {bad[:3]}, unexpected {unexpected[:3]}')
    return backbone.eval()


def feature_drift(plain_out: Sequence[torch.Tensor],
                  apt_out: Sequence[torch.Tensor]) -> tuple:
    """(relative error, mean per-position cosine) over all output maps."""
    num = den = 0.0
    cosines = []
    for p, a in zip(plain_out, apt_out):
        num += float((a - p).float().square().sum())
        den += float(p.float().square().sum())
        cosines.append(
            torch.nn.functional.cosine_similarity(a, p, dim=1).flatten())
    return (num / max(den, 1e-12))**0.5, float(torch.cat(cosines).mean())


def measure_drift(args, images: List[torch.Tensor], settings: List[dict],
                  patch_sizes) -> None:
    """Adds drift_rel_mean / _p90 / cosine_mean to every setting."""
    from mmapt.registry import MODELS
    plain, apt_kwargs, mean, std, state = build_backbones(
        args.config, args.checkpoint, args.trust_checkpoint)
    plain_sizes = tuple(
        apt_kwargs.get('patch_size', 16) * 2**i
        for i in range(len(patch_sizes)))
    if plain_sizes != tuple(patch_sizes):
        raise ValueError(f'--patch-sizes {list(patch_sizes)} must start at '
                         f'the model\'s patch size '
                         f'({apt_kwargs.get("patch_size", 16)})')
    batches = [normalise([img], mean, std) for img in images]
    progress = Progress(
        len(batches) * (len(settings) + 1), 'feature drift (forwards)')
    with torch.no_grad():
        reference = []
        for batch in batches:
            reference.append(plain(batch))
            progress.update()
        for setting in settings:
            mode = dict(scorer=setting['scorer'])
            if setting['mode'] == 'thresholds':
                mode['thresholds'] = setting['thresholds']
            else:
                mode['keep_ratio'] = setting['keep_ratio']
            apt = build_apt(MODELS, apt_kwargs, state, patch_sizes, mean, std,
                            **mode)
            rel, cos = [], []
            for batch, ref in zip(batches, reference):
                r, c = feature_drift(ref, apt(batch))
                rel.append(r)
                cos.append(c)
                progress.update()
            setting.update(
                drift_rel_mean=round(statistics.mean(rel), 4),
                drift_rel_p90=round(float(np.quantile(rel, 0.9)), 4),
                cosine_mean=round(statistics.mean(cos), 4))


def recommend(settings: Sequence[dict], max_drift: float) -> Optional[dict]:
    """The setting with the fewest tokens (mean keep ratio) whose mean
    relative drift is at most ``max_drift``; ties: the lower drift."""
    fits = [s for s in settings if s['drift_rel_mean'] <= max_drift]
    if not fits:
        return None
    return min(fits, key=lambda s: (s['keep_mean'], s['drift_rel_mean']))


# ------------------------------------------------------------------- main
def check_args(args) -> Optional[str]:
    if args.target_keep is not None and not 0 < args.target_keep <= 1:
        return '--target-keep must be in (0, 1]'
    for ratio in args.keep_ratios or ():
        if not 0 < ratio <= 1:
            return f'--keep-ratios must be in (0, 1], got {ratio}'
    if (args.config is None) != (args.checkpoint is None):
        return '--config and --checkpoint go together (feature drift mode)'
    if args.target_keep is None and not args.keep_ratios and \
            args.checkpoint is None:
        return ('give --target-keep (threshold search), --keep-ratios '
                '(budget settings) or --config/--checkpoint (feature drift)')
    if args.max_drift <= 0:
        return '--max-drift must be positive'
    if 'importance' in args.scorers:
        return ('the importance scorer needs a map per image, which this tool '
                'does not read; calibrate its base scorer instead')
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem is None and args.plot:
        try:
            check_writable_file(args.plot, '--plot')
        except InputError as err:
            problem = str(err)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2
    if args.checkpoint is not None and args.keep_ratios is None:
        args.keep_ratios = list(DRIFT_KEEP_RATIOS)
    num_thresholds = len(args.patch_sizes) - 1
    tokenizers: Dict[str, PatchTokenizer] = {}
    references: Dict[str, List[float]] = {}
    try:
        for scorer in args.scorers:
            references[scorer] = reference_for(scorer, num_thresholds,
                                               args.reference)
            tokenizers[scorer], _ = tokenizer_and_images(
                args.path,
                args.patch_sizes,
                references[scorer],
                args.entropy_bins,
                scorer=scorer)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.target_keep is not None and any(t <= 0
                                            for ref in references.values()
                                            for t in ref):
        print(
            'error: --reference thresholds must be positive to be scaled',
            file=sys.stderr)
        return 2
    first = tokenizers[args.scorers[0]]

    scores = {name: [] for name in args.scorers}
    grids, views = [], []
    folder = ImageFolder(args.path, desc='calibrate_thresholds')
    try:
        for _, image in folder:
            view = prepare_view(image, args.canvas, args.crop,
                                first.largest_patch)
            batch = normalise([view])
            first.check_input_size(*batch.shape[-2:])
            grids.append(first.grid_size(*batch.shape[-2:]))
            for name, tokenizer in tokenizers.items():
                scores[name].append(tokenizer.score_maps(batch))
            if args.checkpoint is not None:
                views.append(view)
        folder.check_some_read()
    except (ValueError, ImageReadError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1 if isinstance(err, ImageReadError) else 2
    if folder.skipped:
        print(f'warning: {folder.summary()}', file=sys.stderr)

    settings, result = [], dict(
        images=len(folder.read),
        skipped=[path for path, _ in folder.skipped],
        patch_sizes=list(first.patch_sizes))
    try:
        for name in args.scorers:
            maps, reference = scores[name], references[name]
            if args.target_keep is not None:
                scale, achieved = calibrate(maps, reference, grids,
                                            args.target_keep)
                thresholds = [round_up(scale * t) for t in reference]
                ratios = keep_ratios(maps, thresholds, grids)
                settings.append(
                    dict(
                        scorer=name,
                        mode='thresholds',
                        thresholds=thresholds,
                        per_image=ratios,
                        **distribution(ratios)))
            for ratio in args.keep_ratios or ():
                tokenizer = PatchTokenizer(
                    first.patch_size,
                    reference,
                    entropy_bins=args.entropy_bins,
                    scorer=name,
                    keep_ratio=ratio)
                ratios = budget_keep_ratios(tokenizer, maps, grids)
                settings.append(
                    dict(
                        scorer=name,
                        mode='keep_ratio',
                        keep_ratio=ratio,
                        per_image=ratios,
                        **distribution(ratios)))
        if args.checkpoint is not None:
            measure_drift(args, views, settings, first.patch_sizes)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2

    # The first scorer's threshold search: the tool's original answer.
    name = args.scorers[0]
    result.update(
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
        name: quantiles(scores[name], first.patch_sizes)
        for name in args.scorers
    }
    result['entropy_quantiles_10_25_50_75_90'] = \
        result['score_quantiles_10_25_50_75_90'].get('entropy')
    result['settings'] = [{
        k: v
        for k, v in s.items() if k != 'per_image'
    } for s in settings]
    if args.checkpoint is not None:
        best = recommend(settings, args.max_drift)
        result['max_drift'] = args.max_drift
        result['recommended'] = None if best is None else {
            k: v
            for k, v in best.items() if k != 'per_image'
        }
    if args.plot and settings:
        try:
            plot_keep_ratios(settings, args.plot)
        except RuntimeError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
        result['plot'] = args.plot
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result, first)
    thresholds = result.get('thresholds')
    if name == 'entropy' and thresholds and \
            max(thresholds) > MAX_SAFE_THRESHOLD:
        print(
            f'warning: a threshold above {MAX_SAFE_THRESHOLD} bits; the '
            'paper saw accuracy fall sharply there, fine-tuning did not '
            'recover it',
            file=sys.stderr)
    if args.checkpoint is not None and result['recommended'] is None:
        print(
            f'warning: no setting stays within --max-drift '
            f'{args.max_drift}; try higher keep ratios',
            file=sys.stderr)
    return 0


def quantiles(score_maps, patch_sizes) -> Dict[int, List[float]]:
    out = {}
    for i, size in enumerate(patch_sizes[1:]):
        values = torch.cat([maps[i].flatten() for maps in score_maps])
        out[size] = [
            round(float(q), 3)
            for q in np.quantile(values.numpy(), [0.1, 0.25, 0.5, 0.75, 0.9])
        ]
    return out


def print_report(result: dict, tokenizer: PatchTokenizer) -> None:
    print(f'{result["images"]} images, patch sizes {tokenizer.patch_sizes}')
    print(f'{result["scorer"]} reference thresholds {result["reference"]}: '
          f'mean keep {result["reference_keep"]:.3f}')
    if 'thresholds' in result:
        print(f'thresholds {result["thresholds"]}: mean keep '
              f'{result["achieved_keep"]:.3f} '
              f'(target {result["target_keep"]})')
    for name, per_size in result['score_quantiles_10_25_50_75_90'].items():
        for size, q in per_size.items():
            print(f'  {name} {size:>4}px score quantiles 10/25/50/75/90%: '
                  f'{q}')
    drift = 'drift_rel_mean' in (result['settings'] or [{}])[0]
    header = (f'{"setting":<36} {"keep mean":>9} {"p10":>6} {"median":>6} '
              f'{"p90":>6}')
    if drift:
        header += f' {"rel.err":>8} {"p90":>6} {"cosine":>7}'
    print(header)
    for s in result['settings']:
        line = (f'{setting_label(s):<36} {s["keep_mean"]:>9.3f} '
                f'{s["keep_p10"]:>6.3f} {s["keep_median"]:>6.3f} '
                f'{s["keep_p90"]:>6.3f}')
        if drift:
            line += (f' {s["drift_rel_mean"]:>8.4f} {s["drift_rel_p90"]:>6.3f}'
                     f' {s["cosine_mean"]:>7.4f}')
        print(line)
    if 'recommended' in result:
        best = result['recommended']
        if best is None:
            print(f'no setting within max drift {result["max_drift"]}')
        else:
            print(f'recommended (fewest tokens with mean drift <= '
                  f'{result["max_drift"]}): {setting_label(best)}, keep '
                  f'{best["keep_mean"]:.3f}, drift {best["drift_rel_mean"]}')
    if 'plot' in result:
        print(f'keep-ratio plot: {result["plot"]}')


if __name__ == '__main__':
    sys.exit(main())
