# Copyright (c) mmapt contributors. All rights reserved.
"""Logging of APT token statistics during training, validation and test."""
import logging
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch.utils.hooks import RemovableHandle

from mmapt.models.backbones.token_observer import (TokenCounter,
                                                   is_token_observable)
from mmapt.registry import HOOKS

STAT_KEYS = ('tokens', 'baseline_tokens', 'keep_ratio')


@HOOKS.register_module()
class TokenStatsHook(Hook):
    """Log how many tokens the backbone kept.

    The hook registers an observer on the model's backbone
    (``backbone.register_token_observer``, see
    :class:`mmapt.models.backbones.TokenObservable`); the backbone reports
    the tokens and baseline tokens of every image after every forward. The
    calls of one iteration are summed per image, so slide inference (one
    backbone call per crop) counts the tokens of all crops of an image, and
    its keep ratio is ``sum(tokens) / sum(baseline tokens)`` over the crops.

    Per iteration the batch means go to the runner's message hub as
    ``{mode}/tokens``, ``{mode}/baseline_tokens``, ``{mode}/keep_ratio`` and
    ``{mode}/backbone_calls`` (calls per iteration, e.g. the number of slide
    crops; ``mode`` is train, val or test), so they appear in the text log,
    the json log and every visualiser backend next to the losses and metrics.
    At the end of a val or test epoch the first three are overwritten with
    the means over all images of the epoch (summed over all ranks in
    distributed runs), which is what the epoch summary line and the metrics
    json show.

    ``{mode}/capped`` counts the backbone calls of the iteration that the
    static-shape mode (``pack_size``) capped to their pack size (their
    tokens are fewer than the thresholds asked for, so ``keep_ratio`` alone
    would hide it): in the training log its window mean is the fraction of
    capped batches; at the end of a val or test epoch it is the epoch's
    total. The first capped batch of each mode is also announced with a
    warning, and the totals are printed at the end of training and of each
    val / test epoch.

    Models whose backbone has no ``register_token_observer`` (any other
    detector or segmentor) are skipped with a single warning.

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
        self._handle: Optional[RemovableHandle] = None
        self._observed: Optional[nn.Module] = None
        self._counter = TokenCounter()
        # Per mode: [capped calls, calls] since the run (train) or the
        # epoch (val / test) began.
        self._capped: Dict[str, List[int]] = {}

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _backbone(runner) -> Optional[nn.Module]:
        model = runner.model
        if is_model_wrapper(model) or hasattr(model, 'module'):
            model = model.module
        return getattr(model, 'backbone', None)

    def _observe(self, runner) -> bool:
        """Register the observer on the runner's backbone (once)."""
        backbone = self._backbone(runner)
        if backbone is not None and backbone is self._observed:
            return True
        if self._handle is not None:
            self._handle.remove()
            self._handle, self._observed = None, None
        if not is_token_observable(backbone):
            if not self._warned:
                print_log(
                    'TokenStatsHook: the backbone '
                    f'({type(backbone).__name__}) has no '
                    'register_token_observer; no token statistics will be '
                    'logged.',
                    logger='current',
                    level=logging.WARNING)
                self._warned = True
            return False
        self._handle = backbone.register_token_observer(
            self._counter, capped=True)
        self._observed = backbone
        return True

    def _start_iter(self, runner) -> None:
        self._counter.reset()
        self._observe(runner)

    def _record(self, runner, mode: str) -> None:
        stats = self._counter.per_image()
        self._counter.reset()
        if stats is None:
            return
        for key in STAT_KEYS:
            runner.message_hub.update_scalar(f'{mode}/{key}',
                                             stats[key].mean().item())
        runner.message_hub.update_scalar(f'{mode}/backbone_calls',
                                         stats['calls'].item())
        self._count_capped(runner, mode, int(stats['capped'].item()),
                           int(stats['calls'].item()))
        if mode != 'train':
            if not self._epoch_sums:
                self._reset()
            sums = self._epoch_sums
            for key in STAT_KEYS:
                sums[key][0] += stats[key].sum().item()
            sums['count'][0] += stats['tokens'].numel()

    def _count_capped(self, runner, mode: str, capped: int,
                      calls: int) -> None:
        runner.message_hub.update_scalar(f'{mode}/capped', capped)
        totals = self._capped.setdefault(mode, [0, 0])
        if capped and not totals[0]:
            print_log(
                f'TokenStatsHook: a {mode} batch needed more tokens than '
                'the backbone\'s pack_size and was capped to fit (fewer '
                'tokens than its thresholds ask for; counted as '
                f'{mode}/capped). Raise model.backbone.pack_size, or give '
                'token buckets (a list of sizes or \'auto\'; '
                'docs/backbone.md, "Static-shape mode").',
                logger='current',
                level=logging.WARNING)
        totals[0] += capped
        totals[1] += calls

    def _report_capped(self, runner, mode: str) -> None:
        """Log and reset the capped total of ``mode`` (a message-hub
        scalar too, for val and test)."""
        capped, calls = self._capped.pop(mode, (0, 0))
        if mode != 'train':
            runner.message_hub.update_scalar(f'{mode}/capped', capped)
        if capped:
            print_log(
                f'TokenStatsHook: {capped} of {calls} {mode} backbone '
                'calls were capped to the pack_size.',
                logger='current',
                level=logging.WARNING)

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
    def before_run(self, runner) -> None:
        self._observe(runner)

    def after_train(self, runner) -> None:
        self._report_capped(runner, 'train')

    def after_run(self, runner) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle, self._observed = None, None

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        self._start_iter(runner)

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start_iter(runner)

    def before_test_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None) -> None:
        self._start_iter(runner)

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
        self._report_capped(runner, 'val')

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
        self._report_capped(runner, 'test')
