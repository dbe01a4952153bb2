"""Timing backbone arms on images, interleaved, in one process."""
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from mmapt.benchmark.memory import peak_memory_mib
from mmapt.benchmark.timing import time_call
from .backbones import forward_tokens
from .budget import Budget, OverBudget
from .core import Arm, rotated
from .probes import CompileWatch, attention_probe

#: ``make(x) -> call``: the zero-argument call an arm times on input ``x``.
CallFactory = Callable[[torch.Tensor], Callable[[], object]]


class BackboneArm(Arm):
    """An :class:`~mmapt.benchmark.core.Arm` that runs a backbone on one
    view of an image.

    Args:
        name (str): Its name in reports.
        model (nn.Module): The backbone whose tokens are counted.
        view (str): Which view of an image it takes (e.g. ``'square'``).
        make (CallFactory): The call to time on an input of that view.
        count_tokens (bool): Count tokens with an extra eager forward
            (False for calls that do not notify the token observers, e.g.
            graph replays: they take the tokens of ``tokens_from``).
        tokens_from (str, optional): Arm whose token counts this one has.
        compiled (bool): A ``torch.compile`` arm: its graph breaks,
            recompiles and CUDA graphs are recorded.
        needs_s (float): Budget it must have left to start (a compile that
            cannot be stopped midway must not start near the end).
    """

    def __init__(self,
                 name: str,
                 model: nn.Module,
                 view: str,
                 make: CallFactory,
                 count_tokens: bool = True,
                 tokens_from: Optional[str] = None,
                 compiled: bool = False,
                 needs_s: float = 0.) -> None:
        super().__init__(name)
        self.model = model
        self.view = view
        self.make = make
        self.count_tokens = count_tokens
        self.tokens_from = tokens_from
        self.compiled = compiled
        self.needs_s = needs_s


@dataclass
class ArmOutcomes:
    """What became of each arm beside its timings.

    Attributes:
        skipped (dict): Arm -> why it cannot run here.
        failed (dict): Arm -> the error it raised.
        cut (dict): Arm -> where the time budget or a stop ended it.
        info (dict): Arm -> what it ran (:func:`prepare_arm`'s record).
    """

    skipped: Dict[str, str] = field(default_factory=dict)
    failed: Dict[str, str] = field(default_factory=dict)
    cut: Dict[str, str] = field(default_factory=dict)
    info: Dict[str, dict] = field(default_factory=dict)

    def unaccounted(self, names: Sequence[str],
                    timed: Sequence[str]) -> List[str]:
        """The arms of ``names`` neither timed nor left out with a
        reason."""
        known = set(timed) | set(self.skipped) | set(self.failed) | set(
            self.cut)
        return [n for n in names if n not in known]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare_arm(arm: BackboneArm,
                inputs: Dict[str, Dict[str, torch.Tensor]],
                warmup: int,
                ready: Dict[str, Arm],
                device: torch.device,
                budget: Optional[Budget] = None) -> dict:
    """Warm ``arm`` up on every image and count its tokens (those of
    ``ready[arm.tokens_from]`` for an arm that does not count its own).

    Returns what it ran: ``attention`` (the kernels of its first call, by
    :func:`~mmapt.benchmark.probes.attention_probe`; a graph arm's first
    call is its capture), ``peak_mib`` (CUDA: peak memory above the memory
    in use, over the first image's warm-up, so a capture or a compile is
    included; None elsewhere: not measured), ``prepare_s`` and, for a
    compiled arm, ``compile`` (:class:`~mmapt.benchmark.probes.
    CompileWatch`). Raises :class:`~mmapt.benchmark.budget.OverBudget`
    between calls once ``budget`` is spent.
    """
    if warmup < 1:
        raise ValueError(f'warmup {warmup}: at least one call (a graph '
                         'arm captures on its first)')
    start = time.perf_counter()
    watch = CompileWatch(device) if arm.compiled else None
    info: dict = {}
    for index, (image, views) in enumerate(inputs.items()):
        call = arm.make(views[arm.view])

        def warm() -> None:
            for i in range(warmup):
                if index == 0 and i == 0:
                    with attention_probe(arm.model) as info['attention']:
                        call()
                    if watch is not None:
                        watch.first_call_done()
                else:
                    call()
                if budget is not None:
                    budget.check(f'while warming {arm.name} up on {image}')

        if index == 0 and device.type == 'cuda':
            info['peak_mib'] = round(peak_memory_mib(warm, device), 1)
        else:
            info.setdefault('peak_mib', None)  # not measured off CUDA
            warm()
        if arm.count_tokens:
            arm.set_tokens(image, *forward_tokens(arm.model, call))
        elif arm.tokens_from in ready:
            arm.tokens[image] = ready[arm.tokens_from].tokens[image]
    info['prepare_s'] = round(time.perf_counter() - start, 2)
    if watch is not None:
        info['compile'] = watch.record()
    return info


def prepare_arms(
        arms: Sequence[BackboneArm],
        inputs: Dict[str, Dict[str, torch.Tensor]],
        warmup: int,
        ready: Dict[str, Arm],
        outcomes: ArmOutcomes,
        device: torch.device = torch.device('cpu'),
        budget: Optional[Budget] = None,
        on_arm: Optional[Callable[[str], None]] = None) -> List[BackboneArm]:
    """:func:`prepare_arm` for every arm; an arm that raises is left out
    (``outcomes.failed``), not fatal; one the budget ends, before or during
    its warm-up, goes to ``outcomes.cut``. The arms that are ready join
    ``ready`` by name and are returned. ``on_arm(name)`` runs after each
    arm (e.g. to write the report so far)."""
    done = []
    for arm in arms:
        try:
            if budget is not None:
                budget.check('before its warm-up')
                if budget.left() < arm.needs_s:
                    raise OverBudget(
                        f'not started: it needs about {arm.needs_s:g} s, '
                        f'{budget.left():.0f} s of the time budget '
                        f'({budget.seconds:g} s) were left')
            outcomes.info[arm.name] = prepare_arm(arm, inputs, warmup, ready,
                                                  device, budget)
        except OverBudget as err:
            outcomes.cut[arm.name] = str(err)
        except Exception as err:  # noqa: BLE001 - one arm must not end all
            outcomes.failed[arm.name] = f'{type(err).__name__}: {err}'
        else:
            done.append(arm)
            ready[arm.name] = arm
        if arm not in done:
            why = outcomes.cut.get(arm.name) or outcomes.failed[arm.name]
            log(f'arm {arm.name} left out: {why}')
        if on_arm is not None:
            on_arm(arm.name)
    return done


def time_arms(arms: Sequence[BackboneArm],
              inputs: Dict[str, Dict[str, torch.Tensor]],
              repeat: int,
              device: torch.device,
              clock: Callable[[], float] = time.perf_counter,
              key: str = 'model_ms',
              budget: Optional[Budget] = None,
              on_repeat: Optional[Callable[[int], None]] = None) -> int:
    """Every repeat runs every image through every arm (first arm
    rotating); each call timed alone (CUDA events after a synchronize) and
    added to its arm under ``key``.
    ``on_repeat(done)`` runs after each repeat; once ``budget`` is spent
    the timing stops after a whole repeat. Returns the repeats done."""
    calls = {
        (arm.name, image): arm.make(views[arm.view])
        for arm in arms
        for image, views in inputs.items()
    }
    for rep in range(repeat):
        for image in inputs:
            for arm in rotated(arms, rep):
                ms, _ = time_call(calls[arm.name, image], device, clock)
                arm.add(image, **{key: ms})
        if on_repeat is not None:
            on_repeat(rep + 1)
        if budget is not None and budget.over():
            return rep + 1
    return repeat


def arm_summary(record: Arm,
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
             clock: Callable[[], float],
             model: nn.Module) -> Tuple[float, Dict[str, float]]:
    """``(forward ms, exclusive ms per stage ``model`` marks)`` of one
    call, stages timed without synchronizing
    (:class:`~mmapt.benchmark.timing.StageClock`)."""
    from mmapt.benchmark.timing import StageClock
    stage_clock = StageClock(device, clock)
    with torch.no_grad(), stage_clock.listen(model):
        ms, _ = time_call(call, device, clock)
    return ms, stage_clock.result()
