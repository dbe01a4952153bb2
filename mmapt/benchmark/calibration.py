"""Calibrating APT's thresholds and token budgets on unlabelled images.

Score maps are computed once per image and scorer; every candidate setting
then only re-runs the (cheap) patch selection. With a trained plain model,
the feature drift of every setting (how far the APT backbone's outputs move
from the plain one's) ranks them. ``tools/analysis/calibrate_thresholds.py``
is the command line.
"""
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from mmapt.apis.image_folder import progress_bar
from mmapt.apis.views import normalise
from mmapt.tokenizer import PatchTokenizer, build_layout, select_patches

# Entropy thresholds above this cost accuracy in the paper that
# fine-tuning did not recover.
MAX_SAFE_THRESHOLD = 6.0
DEFAULT_ENTROPY_REFERENCE = (2.0, 2.0, 0.3)
DRIFT_KEEP_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9)


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


def setting(scorer: str, ratios: List[float], **mode) -> dict:
    """One setting's record: its scorer, its mode (``thresholds=...`` or
    ``keep_ratio=...``), the per-image keep ratios and their
    :func:`distribution`."""
    return dict(
        scorer=scorer,
        mode=next(iter(mode)),
        **mode,
        per_image=ratios,
        **distribution(ratios))


def sweep_settings(scores: Dict[str, list],
                   references: Dict[str, List[float]],
                   grids: list,
                   patch_size: int,
                   target_keep: Optional[float] = None,
                   budget_ratios: Sequence[float] = (),
                   entropy_bins: int = 512) -> List[dict]:
    """Per scorer (the keys of ``scores``, each image's score maps): the
    threshold search for ``target_keep`` (the ``reference`` shape scaled,
    rounded up), then one budget-mode setting per ``budget_ratios`` entry;
    each with the per-image keep ratios and their :func:`distribution`."""
    settings = []
    for name, maps in scores.items():
        reference = references[name]
        if target_keep is not None:
            scale, _ = calibrate(maps, reference, grids, target_keep)
            thresholds = [round_up(scale * t) for t in reference]
            settings.append(
                setting(
                    name,
                    keep_ratios(maps, thresholds, grids),
                    thresholds=thresholds))
        for ratio in budget_ratios:
            tokenizer = PatchTokenizer(
                patch_size,
                reference,
                entropy_bins=entropy_bins,
                scorer=name,
                keep_ratio=ratio)
            settings.append(
                setting(
                    name,
                    budget_keep_ratios(tokenizer, maps, grids),
                    keep_ratio=ratio))
    return settings


def without_per_image(setting: dict) -> dict:
    """A setting as reported: its keep-ratio distribution, not the list."""
    return {k: v for k, v in setting.items() if k != 'per_image'}


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
    # The tool checked that the folder can be created; it may not exist.
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def build_apt(apt_kwargs: dict, state: dict, patch_sizes, mean, std, **mode):
    """An APT backbone with the plain weights (APT layers zero-init)."""
    from mmapt.registry import MODELS
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


def measure_drift(config: str,
                  checkpoint: str,
                  images: List[np.ndarray],
                  settings: List[dict],
                  patch_sizes: Sequence[int],
                  trust: Optional[bool] = None) -> None:
    """Adds drift_rel_mean / _p90 / cosine_mean to every setting: the plain
    backbone of ``config`` with the ``checkpoint`` and its APT version run
    on every image (uint8 RGB views); progress on stderr."""
    plain, apt_kwargs, mean, std, state = build_backbones(
        config, checkpoint, trust)
    plain_sizes = tuple(
        apt_kwargs.get('patch_size', 16) * 2**i
        for i in range(len(patch_sizes)))
    if plain_sizes != tuple(patch_sizes):
        raise ValueError(f'--patch-sizes {list(patch_sizes)} must start at '
                         f'the model\'s patch size '
                         f'({apt_kwargs.get("patch_size", 16)})')
    batches = [normalise([img], mean, std) for img in images]
    forwards = len(batches) * (len(settings) + 1)
    with torch.no_grad(), progress_bar(forwards,
                                       'feature drift (forwards)') as advance:
        reference = []
        for batch in batches:
            reference.append(plain(batch))
            advance()
        for setting in settings:
            mode = dict(scorer=setting['scorer'])
            if setting['mode'] == 'thresholds':
                mode['thresholds'] = setting['thresholds']
            else:
                mode['keep_ratio'] = setting['keep_ratio']
            apt = build_apt(apt_kwargs, state, patch_sizes, mean, std, **mode)
            rel, cos = [], []
            for batch, ref in zip(batches, reference):
                r, c = feature_drift(ref, apt(batch))
                rel.append(r)
                cos.append(c)
                advance()
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
