"""Evaluating one trained model under several APT settings, with the noise:
the metric of each setting over the same test batches, and a paired
bootstrap over the test images (the same resampled image sets for every
setting). ``tools/analysis/scorer_eval.py`` is the command line.
"""
import ast
import json
import os.path as osp
import sys
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from mmapt.apis.image_folder import progress_bar


def parse_overrides(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings -> a dict for ``Config.merge_from_dict``; the
    values are Python literals where they parse as one, else strings."""
    options = {}
    for pair in pairs:
        if '=' not in pair:
            raise ValueError(f'override {pair!r} is not KEY=VALUE')
        key, value = pair.split('=', 1)
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def build_runner(config: str, work_dir: str):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.load_from = None
    cfg.model.backbone.init_cfg = None
    cfg.default_hooks.pop('visualization', None)
    cfg.custom_hooks = []
    return cfg, Runner.from_cfg(cfg)


def cached_batches(runner, limit=None) -> list:
    """The test batches after the data pipeline, once for all settings."""
    batches = []
    for i, batch in enumerate(runner.test_dataloader):
        if limit is not None and i >= limit:
            break
        batches.append(batch)
    return batches


def with_box_importance(cfg, batches: list) -> list:
    """The ``importance=boxes`` setting: the ground-truth boxes as each
    image's importance map (an oracle: what importance can buy at best),
    delivered by APTDataPreprocessor as the pipeline would."""
    import copy

    from mmapt.datasets.importance import BoxImportanceMap
    wrapped = cfg.model.data_preprocessor.to_dict()
    cfg.model.data_preprocessor = dict(
        type='APTDataPreprocessor', wraps=wrapped.pop('type'), **wrapped)
    transform = BoxImportanceMap()
    out = []
    for batch in batches:
        batch = copy.deepcopy(batch)
        for inputs, sample in zip(batch['inputs'], batch['data_samples']):
            transform(dict(inputs=inputs, data_samples=sample))
        out.append(batch)
    return out


def slide_crops(inputs: Tensor, crop_size: Sequence[int],
                stride: Sequence[int]) -> Iterator[Tensor]:
    """The windows of mmseg's slide inference over a (B, C, H, W) batch,
    in its order and at its positions."""
    (h_crop, w_crop), (h_stride, w_stride) = crop_size, stride
    h_img, w_img = inputs.shape[-2:]
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, h_img)
            x2 = min(w_idx * w_stride + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            yield inputs[:, :, y1:y2, x1:x2]


def feature_drift(model, inputs: Tensor) -> Tensor:
    """(B,) relative feature drift of each image under the model's APT
    setting; a segmentor with slide inference over the windows its
    backbone sees (drift summed over all windows of the image)."""
    from mmapt.models.distillers.scorer_distiller import (drift_sums,
                                                          image_drift)
    test_cfg = getattr(model, 'test_cfg', None) or {}
    if test_cfg.get('mode') != 'slide':
        return image_drift(model.backbone, inputs)
    num = den = 0
    for crop in slide_crops(inputs, test_cfg['crop_size'], test_cfg['stride']):
        n, d = drift_sums(model.backbone, crop)
        num, den = num + n, den + d
    return (num / den.clamp(min=1e-12)).sqrt()


def run_setting(runner,
                cfg,
                overrides: dict,
                checkpoint: str,
                batches: list,
                trust: Optional[bool] = None,
                drift: bool = False) -> dict:
    """Predictions of one setting: per-image metric results and tokens
    (and, with ``drift``, each image's feature drift against the plain
    layout with the same weights)."""
    from mmengine.evaluator import Evaluator
    from mmengine.runner import load_checkpoint

    from mmapt.engine import safe_checkpoint_loading
    setting_cfg = cfg.copy()
    overrides = dict(overrides)
    importance = overrides.pop('importance', None)
    setting_cfg.merge_from_dict(overrides)
    if importance == 'boxes':
        batches = with_box_importance(setting_cfg, batches)
    elif importance is not None:
        raise ValueError(f'importance={importance!r}: only importance=boxes '
                         '(the ground-truth boxes) is built in')
    model = runner.build_model(setting_cfg.model)
    # A Runner-written (trained) checkpoint, loaded without running code.
    with safe_checkpoint_loading(trust):
        load_checkpoint(model, checkpoint, map_location='cpu', strict=False)
    model.eval()
    evaluator = Evaluator(setting_cfg.test_evaluator)
    evaluator.dataset_meta = runner.test_dataloader.dataset.metainfo
    tokens: List[int] = []
    baseline: List[int] = []
    calls: List[tuple] = []
    drifts: List[float] = []
    handle = model.backbone.register_token_observer(lambda t, b: calls.append(
        (t.cpu(), b.cpu())))
    with torch.no_grad():
        for batch in batches:
            calls.clear()
            outputs = model.test_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
            # Slide inference calls the backbone once per crop: sum them.
            per_image_t = torch.zeros(len(outputs), dtype=torch.long)
            per_image_b = torch.zeros(len(outputs), dtype=torch.long)
            for t, b in calls:
                if len(t) == len(outputs):
                    per_image_t += t
                    per_image_b += b
                else:  # one image per call (slide windows of batch 1)
                    per_image_t += t.sum()
                    per_image_b += b.sum()
            tokens += per_image_t.tolist()
            baseline += per_image_b.tolist()
            if drift:  # after the token tally: its forward is not counted
                inputs = model.data_preprocessor(batch, False)['inputs']
                drifts += feature_drift(model, inputs).tolist()
    handle.remove()
    metric = evaluator.metrics[0]
    results = list(metric.results)
    summary = evaluator.evaluate(len(results))
    return dict(
        results=results,
        metric=metric,
        summary={
            k: float(v)
            for k, v in summary.items() if isinstance(v, (int, float))
        },
        tokens=tokens,
        baseline_tokens=baseline,
        drift=drifts)


class CocoBootstrap:
    """COCO AP of resampled image sets from one ``evaluate()``.

    ``COCOeval.evaluate`` matches detections per image and category; AP of
    any multiset of images is then ``accumulate`` over those per-image
    matches, so the matching runs once and each resample costs only the
    accumulation.
    """

    def __init__(self, metric, results: list, iou_type: str) -> None:
        from mmdet.datasets.api_wrappers import COCOeval

        # CocoMetric keeps (ground truth, prediction) per image.
        preds = [r[1] if isinstance(r, tuple) else r for r in results]
        with tempfile.TemporaryDirectory() as tmp:
            files = metric.results2json(preds, osp.join(tmp, 'r'))
            with open(files[iou_type]) as f:
                predictions = json.load(f)
        if iou_type == 'segm':  # as mmdet: mask areas, not box areas
            for p in predictions:
                p.pop('bbox', None)
        coco_dt = self._quiet(lambda: metric._coco_api.loadRes(predictions))
        self.eval = COCOeval(metric._coco_api, coco_dt, iou_type)
        self.eval.params.catIds = metric.cat_ids
        self.img_ids = [p['img_id'] for p in preds]
        self.eval.params.imgIds = self.img_ids
        self.eval.params.maxDets = list(metric.proposal_nums)
        self.eval.params.iouThrs = metric.iou_thrs
        self._quiet(self.eval.evaluate)
        self.matches = list(self.eval.evalImgs)
        self.num_images = len(self.img_ids)
        self.params = self.eval._paramsEval

    @staticmethod
    def _quiet(fn):
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()

    def ap(self, indices: Sequence[int]) -> float:
        """AP@[.5:.95] (``stats[0]``) over the images at ``indices``
        (repeats allowed)."""
        n0 = self.num_images
        num_areas = len(self.params.areaRng)
        num_cats = len(self.params.catIds)
        picked = []
        for k in range(num_cats):
            for a in range(num_areas):
                base = k * num_areas * n0 + a * n0
                picked.extend(self.matches[base + i] for i in indices)
        ids = [self.img_ids[i] for i in indices]
        # accumulate() reads the image list of both parameter sets.
        self.eval.params.imgIds = ids
        self.params.imgIds = ids
        self.eval.evalImgs = picked
        self._quiet(self.eval.accumulate)
        self._quiet(self.eval.summarize)
        return float(self.eval.stats[0])


def seg_miou(results: list, indices: Sequence[int]) -> float:
    """mmseg's mIoU over the images at ``indices`` (IoUMetric results:
    per-image areas of intersection, union, prediction and label)."""
    inter = sum(results[i][0] for i in indices)
    union = sum(results[i][1] for i in indices)
    iou = (inter / union).numpy()
    return float(np.nanmean(iou))


def scorers_of(run: dict,
               scope: str) -> Dict[str, Callable[[Sequence[int]], float]]:
    """Metric name -> function of image indices, in %."""
    out = {}
    if run.get('drift'):
        drift = np.array(run['drift'])
        out['feature_drift'] = lambda idx: 100 * float(drift[idx].mean())
    if scope == 'mmseg':
        return dict(
            mIoU=lambda idx: 100 * seg_miou(run['results'], idx), **out)
    for iou_type, name in (('bbox', 'box_AP'), ('segm', 'mask_AP')):
        if iou_type in run['metric'].metrics:
            boot = CocoBootstrap(run['metric'], run['results'], iou_type)
            out[name] = lambda idx, b=boot: 100 * b.ap(idx)
    return out


def summarise(values: np.ndarray) -> dict:
    low, high = np.percentile(values, [2.5, 97.5])
    return dict(
        std=round(float(values.std()), 2),
        ci95=[round(float(low), 2),
              round(float(high), 2)])


def run_settings(runner,
                 cfg,
                 overrides: Dict[str, dict],
                 checkpoint: str,
                 batches: list,
                 trust: Optional[bool] = None,
                 drift: bool = False) -> Dict[str, dict]:
    """:func:`run_setting` for every label of ``overrides``, in order, with
    progress and each setting's summary on stderr."""
    runs = {}
    with progress_bar(len(overrides), 'settings') as advance:
        for label, options in overrides.items():
            runs[label] = run_setting(runner, cfg, options, checkpoint,
                                      batches, trust, drift)
            advance(f'{label}: {runs[label]["summary"]}')
    return runs


def compare(values: Dict[str, np.ndarray], points: Dict[str, float],
            other_values: Dict[str, np.ndarray],
            other_points: Dict[str, float]) -> dict:
    """Per metric: one setting minus another, the point difference and the
    paired bootstrap's (same resamples) probability, std and interval."""
    diffs = {}
    for name, boot in values.items():
        delta = boot - other_values[name]
        diffs[name] = dict(
            delta=round(points[name] - other_points[name], 2),
            p_better=round(float((delta > 0).mean()), 3),
            **summarise(delta))
    return diffs


def bootstrap_report(runs: Dict[str, dict],
                     overrides: Dict[str, dict],
                     scope: str,
                     bootstrap: int,
                     seed: int = 0,
                     reference: Optional[str] = None) -> dict:
    """Tokens, metrics with their bootstrap intervals, and every pair of
    settings compared (``paired``; ``vs_<reference>`` as well)."""
    labels = list(runs)
    num_images = len(runs[labels[0]]['tokens'])
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, num_images, (bootstrap, num_images))
    everything = np.arange(num_images)
    report = dict(
        images=num_images, bootstrap=bootstrap, seed=seed, settings={})
    boot_values, points = {}, {}
    for label in labels:
        run = runs[label]
        tokens = np.array(run['tokens'], dtype=float)
        base = np.array(run['baseline_tokens'], dtype=float)
        entry = dict(
            overrides={
                k: repr(v)
                for k, v in overrides[label].items()
            },
            tokens_per_image=round(float(tokens.mean()), 1),
            keep_ratio=round(float(tokens.sum() / base.sum()), 4),
            keep_ratio_per_image_min_max=[
                round(float((tokens / base).min()), 3),
                round(float((tokens / base).max()), 3)
            ],
            mmengine_metrics=run['summary'],
            metrics={})
        boot_values[label], points[label] = {}, {}
        for name, fn in scorers_of(run, scope).items():
            values = np.array([fn(s) for s in samples])
            boot_values[label][name] = values
            entry['metrics'][name] = dict(
                value=round(fn(everything), 2), **summarise(values))
            points[label][name] = entry['metrics'][name]['value']
        report['settings'][label] = entry
        print(f'bootstrapped {label}', file=sys.stderr, flush=True)
    # Every pair, so any two settings can be compared afterwards.
    for label in labels:
        report['settings'][label]['paired'] = {
            other:
            compare(boot_values[label], points[label], boot_values[other],
                    points[other])
            for other in labels if other != label
        }
    if reference:
        for label in labels:
            report['settings'][label]['vs_' + reference] = compare(
                boot_values[label], points[label], boot_values[reference],
                points[reference])
    return report


def print_table(report: dict, reference=None) -> None:
    for label, entry in report['settings'].items():
        parts = [
            f'{label:<18} keep {entry["keep_ratio"]:.3f} '
            f'({entry["tokens_per_image"]} tokens)'
        ]
        for name, m in entry['metrics'].items():
            part = f'{name} {m["value"]:.2f} [{m["ci95"][0]}, {m["ci95"][1]}]'
            if reference and reference != label:
                d = entry['vs_' + reference][name]
                part += (f' d={d["delta"]:+.2f} [{d["ci95"][0]}, '
                         f'{d["ci95"][1]}]')
            parts.append(part)
        print(' | '.join(parts))
