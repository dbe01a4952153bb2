# Copyright (c) mmapt contributors. All rights reserved.
"""Logging of APT token statistics during training, validation and test."""
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

STAT_KEYS = ('tokens', 'baseline_tokens', 'keep_ratio')


def _mean(values: Sequence) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals)


@HOOKS.register_module()
class TokenStatsHook(Hook):
    """Log how many tokens the backbone kept.

    After every forward the backbone of an mmapt model exposes
    ``backbone.token_stats = dict(tokens=[...], baseline_tokens=[...],
    keep_ratio=[...])`` (one entry per image). This hook writes the batch
    means to the runner's message hub as ``{mode}/tokens``,
    ``{mode}/baseline_tokens`` and ``{mode}/keep_ratio`` (``mode`` is train,
    val or test), so they appear in the text log, in the json log and in
    every visualiser backend (TensorBoard, ...) next to the losses and
    metrics. At the end of a val or test epoch the same keys are overwritten
    with the means over all images of the epoch (summed over all ranks in
    distributed runs), which is what the epoch summary line and the metrics
    json show.

    Models without ``backbone.token_stats`` (any other detector or segmentor)
    are skipped with a single warning.

    Args:
        interval (int): Record training statistics every ``interval``
            iterations. Validation and test batches are always recorded.
            Defaults to 1.
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) in *_epoch

    def __init__(self, interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.interval = interval
        self._warned = False
        self._epoch_sums: Dict[str, List[float]] = {}

    # ------------------------------------------------------------ helpers
    def _get_stats(self, runner) -> Optional[Dict[str, list]]:
        model = runner.model
        if is_model_wrapper(model) or hasattr(model, 'module'):
            model = model.module
        backbone = getattr(model, 'backbone', None)
        stats = getattr(backbone, 'token_stats', None)
        if not stats or not all(stats.get(k) is not None and len(stats[k])
                                for k in STAT_KEYS):
            if not self._warned:
                print_log(
                    'TokenStatsHook: the model has no backbone.token_stats '
                    f'(backbone: {type(backbone).__name__}); no token '
                    'statistics will be logged.',
                    logger='current',
                    level=30)
                self._warned = True
            return None
        return stats

    def _record(self, runner, mode: str) -> None:
        stats = self._get_stats(runner)
        if stats is None:
            return
        for key in STAT_KEYS:
            runner.message_hub.update_scalar(f'{mode}/{key}',
                                             _mean(stats[key]))
        if mode != 'train':
            if not self._epoch_sums:
                self._reset()
            sums = self._epoch_sums
            for key in STAT_KEYS:
                sums[key][0] += sum(float(v) for v in stats[key])
            sums['count'][0] += len(stats['tokens'])

    def _reset(self) -> None:
        self._epoch_sums = {k: [0.0] for k in (*STAT_KEYS, 'count')}

    def _finish_epoch(self, runner, mode: str) -> None:
        sums = self._epoch_sums
        if not sums:
            return
        totals = torch.tensor([sums[k][0] for k in (*STAT_KEYS, 'count')],
                              dtype=torch.float64)
        all_reduce(totals)  # no-op when not distributed
        count = totals[-1].item()
        if count > 0:
            for i, key in enumerate(STAT_KEYS):
                runner.message_hub.update_scalar(f'{mode}/{key}',
                                                 totals[i].item() / count)
        self._epoch_sums = {}

    # -------------------------------------------------------------- hooks
    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        if self.every_n_train_iters(runner, self.interval) or \
                self.is_last_train_iter(runner):
            self._record(runner, 'train')

    def before_val_epoch(self, runner) -> None:
        self._reset()

    def after_val_iter(self,
                       runner,
                       batch_idx: int,
                       data_batch=None,
                       outputs=None) -> None:
        self._record(runner, 'val')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish_epoch(runner, 'val')

    def before_test_epoch(self, runner) -> None:
        self._reset()

    def after_test_iter(self,
                        runner,
                        batch_idx: int,
                        data_batch=None,
                        outputs=None) -> None:
        self._record(runner, 'test')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish_epoch(runner, 'test')
