"""Training speed of backbones: a forward + backward per arm, interleaved
like inference, within the run's time budget."""
from typing import Callable, Dict, Optional

import torch
from torch import nn

from mmapt.benchmark.timing import time_call
from .budget import Budget, OverBudget
from .core import Arm, ratio, rotated
from .cuda import autocast_for
from .runner import arm_summary

#: Training arm -> (model key, input view).
TRAIN_ARMS = dict(
    plain_square=('plain', 'square'),
    plain_window=('plain', 'window'),
    apt_square=('apt', 'square'),
    apt_nopad=('apt', 'nopad'))


def train_step(model: nn.Module, x: torch.Tensor, device: torch.device,
               dtype: Optional[torch.dtype]) -> Callable[[], None]:
    """One forward (autocast) + backward of ``model`` on ``x``, loss = the
    mean of the outputs; the gradients are dropped after it."""

    def step() -> None:
        with autocast_for(device, dtype):
            outs = model(x)
        loss = sum(o.float().mean() for o in outs)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def train_arms(models: Dict[str, nn.Module],
               inputs: Dict[str, Dict[str, torch.Tensor]],
               device: torch.device,
               dtype: Optional[torch.dtype],
               repeat: int,
               budget: Optional[Budget] = None) -> dict:
    """Time :data:`TRAIN_ARMS` (the models in train mode, one warm-up step
    per image), every repeat every image through every arm.

    The budget is checked before and during each arm's warm-up (an arm it
    ends goes to ``cut``) and after every repeat (the timing stops after a
    whole one: ``repeats_done``).

    Returns:
        dict: ``arms`` (per arm summary, key ``step_ms``), ``failed``,
        ``cut``, ``repeats_done`` and ``summary`` (speed-ups).
    """
    steps, records, failed, cut = {}, {}, {}, {}
    for model in models.values():
        model.train()
    done = 0
    try:
        for name, (key, view) in TRAIN_ARMS.items():
            try:
                for image, views in inputs.items():
                    if budget is not None:
                        budget.check(f'while warming training {name} up')
                    steps[name, image] = train_step(models[key], views[view],
                                                    device, dtype)
                    steps[name, image]()  # warm-up
                records[name] = Arm(name)
            except OverBudget as err:
                cut[name] = str(err)
            except Exception as err:  # noqa: BLE001
                failed[name] = f'{type(err).__name__}: {err}'
        ready = [n for n in TRAIN_ARMS if n in records]
        for rep in range(repeat if ready else 0):
            for image in inputs:
                for name in rotated(ready, rep):
                    ms, _ = time_call(steps[name, image], device)
                    records[name].add(image, step_ms=ms)
            done = rep + 1
            if budget is not None and budget.over():
                break
    finally:
        for model in models.values():
            model.eval()
            model.zero_grad(set_to_none=True)
    arms = {
        name: arm_summary(r, None, key='step_ms')
        for name, r in records.items()
    }
    totals = {name: a['total_ms'] for name, a in arms.items()}
    return dict(
        arms=arms,
        failed=failed,
        cut=cut,
        repeats_done=done,
        summary=dict(
            speedup_vs_plain_square=ratio(
                totals.get('plain_square'), totals.get('apt_square')),
            nopad_speedup_vs_plain_window=ratio(
                totals.get('plain_window'), totals.get('apt_nopad'))))
