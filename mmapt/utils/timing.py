"""Timing helpers of the benchmark tools: one call, and stages inside it.

On CUDA every clock read is preceded by a synchronize (kernels run
asynchronously: without it a stage would be charged its launches only), and
whole calls are timed with CUDA events.
"""
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(
        fn: Callable[[], object],
        device: torch.device,
        clock: Callable[[],
                        float] = time.perf_counter) -> Tuple[float, object]:
    """``(milliseconds, result)`` of one call: CUDA events on a GPU, else
    ``clock`` (wall clock, or ``time.process_time`` for CPU time)."""
    if device.type == 'cuda':
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        result = fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end), result
    start = clock()
    result = fn()
    return (clock() - start) * 1e3, result


class StageTimer:
    """Exclusive time of named stages, nested calls subtracted.

    Stages are methods (of an object or a class) or module forwards,
    wrapped only inside :meth:`attach`. A stage called inside another is
    charged to itself and not to its caller, so the stages of one forward
    add up to at most its time.

    Args:
        device (torch.device): Device the stages run on (synchronized at
            every stage boundary on CUDA).
        clock (Callable): Seconds; wall clock by default.
    """

    def __init__(self,
                 device: torch.device,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self.totals: Dict[str, float] = {}
        self._stack: List[List[float]] = []  # [start, time of children]

    def reset(self) -> Dict[str, float]:
        """Return the times so far (ms) and start again."""
        totals, self.totals = self.totals, {}
        return totals

    def _run(self, name: str, fn: Callable, *args, **kwargs):
        sync(self.device)
        frame = [self.clock(), 0.]
        self._stack.append(frame)
        try:
            return fn(*args, **kwargs)
        finally:
            sync(self.device)
            self._stack.pop()
            elapsed = self.clock() - frame[0]
            if self._stack:
                self._stack[-1][1] += elapsed
            self.totals[name] = self.totals.get(name, 0.) + \
                (elapsed - frame[1]) * 1e3

    @contextmanager
    def attach(
            self, stages: Sequence[Tuple[str, object,
                                         str]]) -> Iterator['StageTimer']:
        """Time ``getattr(owner, attr)`` as stage ``name`` for each
        ``(name, owner, attr)``; owners may be modules (``'forward'``),
        objects or classes. Missing attributes are skipped."""
        restore = []
        for name, owner, attr in stages:
            if owner is None or not hasattr(owner, attr):
                continue
            inner = getattr(owner, attr)
            if isinstance(owner, type):
                original = owner.__dict__.get(attr)

                def wrapper(obj, *args, _name=name, _fn=inner, **kwargs):
                    return self._run(_name, _fn, obj, *args, **kwargs)
            else:
                original = owner.__dict__.get(attr)

                def wrapper(*args, _name=name, _fn=inner, **kwargs):
                    return self._run(_name, _fn, *args, **kwargs)

            setattr(owner, attr, wrapper)
            restore.append((owner, attr, original))
        try:
            yield self
        finally:
            for owner, attr, original in reversed(restore):
                if original is None:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, original)


def module_stage(name: str, module: nn.Module) -> Tuple[str, object, str]:
    """A :meth:`StageTimer.attach` entry timing a module's ``forward``."""
    return (name, module, 'forward')
