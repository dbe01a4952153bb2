"""Timing backbone arms on images, interleaved, in one process."""
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mmapt.utils.timing import time_call
from .backbones import forward_tokens
from .core import ArmRecord, interleaved

#: ``make(x) -> call``: the zero-argument call an arm times on input ``x``.
CallFactory = Callable[[torch.Tensor], Callable[[], object]]


@dataclass
class BackboneArm:
    """One way of running a backbone on an image.

    Attributes:
        name (str): Its name in reports.
        model (nn.Module): The backbone whose tokens are counted.
        view (str): Which view of an image it takes (e.g. ``'square'``).
        make (CallFactory): The call to time on an input of that view.
        count_tokens (bool): Count tokens with an extra eager forward
            (False for calls that do not notify the token observers, e.g.
            graph replays: they take the tokens of ``tokens_from``).
        tokens_from (str, optional): Arm whose token counts this one has.
    """

    name: str
    model: nn.Module
    view: str
    make: CallFactory
    count_tokens: bool = True
    tokens_from: Optional[str] = None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_arms(
        arms: Sequence[BackboneArm],
        inputs: Dict[str, Dict[str, torch.Tensor]],
        warmup: int,
        records: Dict[str, ArmRecord],
        failed: Dict[str, str],
        over_budget: Callable[[], bool] = lambda: False) -> List[BackboneArm]:
    """Warm every arm up on every image and count its tokens; an arm that
    raises is left out (its error kept in ``failed``), not fatal; so are
    the arms left once ``over_budget()``."""
    ready = []
    for arm in arms:
        if over_budget():
            failed[arm.name] = 'not run: over the time budget'
            log(f'arm {arm.name} left out: over the time budget')
            continue
        record = records.setdefault(arm.name, ArmRecord(arm.name))
        try:
            for image, views in inputs.items():
                call = arm.make(views[arm.view])
                for _ in range(warmup):
                    call()
                if arm.count_tokens:
                    record.set_tokens(image, *forward_tokens(arm.model, call))
                elif arm.tokens_from in records:
                    record.tokens[image] = \
                        records[arm.tokens_from].tokens[image]
        except Exception as err:  # noqa: BLE001 - one arm must not end all
            failed[arm.name] = f'{type(err).__name__}: {err}'
            records.pop(arm.name, None)
            log(f'arm {arm.name} left out: {failed[arm.name]}')
            continue
        ready.append(arm)
    return ready


def time_arms(arms: Sequence[BackboneArm],
              inputs: Dict[str, Dict[str, torch.Tensor]],
              repeat: int,
              device: torch.device,
              records: Dict[str, ArmRecord],
              clock: Callable[[], float] = time.perf_counter,
              key: str = 'model_ms') -> None:
    """Every repeat runs every image through every arm (first arm
    rotating); each call timed alone (CUDA events after a synchronize)."""
    calls = {
        (arm.name, image): arm.make(views[arm.view])
        for arm in arms
        for image, views in inputs.items()
    }
    for _, image, arm in interleaved(arms, list(inputs), repeat):
        ms, _ = time_call(calls[arm.name, image], device, clock)
        records[arm.name].add(image, **{key: ms})


def arm_summary(record: ArmRecord,
                square_tokens: Optional[int],
                key: str = 'model_ms') -> dict:
    """The GPU benchmark's per-arm summary: per image times and median,
    sums, images/s, tokens and keep ratio."""
    medians = record.medians()
    per_image = {}
    for image in record.items:
        tokens, baseline = record.tokens.get(image, (None, None))
        per_image[image] = dict(
            tokens=tokens,
            baseline_tokens=baseline,
            times_ms=[round(t, 3) for t in record.times(image, key)],
            median_ms=medians[image][key])
    total = record.total(key)
    tokens = record.total_tokens() if record.tokens else None
    return dict(
        per_image=per_image,
        total_ms=round(total, 3),
        img_s=round(len(per_image) / total * 1e3, 3),
        median_ms=round(
            statistics.median(m[key] for m in medians.values()), 3),
        tokens=tokens,
        square_tokens=square_tokens,
        keep_ratio=round(tokens / square_tokens, 4)
        if tokens and square_tokens else None)


def split_of(call: Callable[[], object], device: torch.device,
             clock: Callable[[], float]) -> Tuple[float, Dict[str, float]]:
    """``(forward ms, exclusive ms per marked stage)`` of one call, stages
    timed without synchronizing (:class:`~mmapt.utils.timing.StageClock`)."""
    from mmapt.utils.timing import StageClock
    stage_clock = StageClock(device, clock)
    with torch.no_grad(), stage_clock.listen():
        ms, _ = time_call(call, device, clock)
    return ms, stage_clock.result()
