"""Timing helpers of the benchmark tools: one call, and stages inside it.

Whole calls are timed with CUDA events on a GPU (after a synchronize), with
a host clock elsewhere. Stages inside a call are timed two ways:

* :class:`StageTimer`: host clock, a synchronize at every stage boundary on
  CUDA (kernels run asynchronously: without it a stage would be charged its
  launches only). Exact per stage, but the syncs cost GPU idle time.
* :class:`StageClock`: CUDA events recorded at the boundaries, no
  synchronize until the end: the stream time between boundaries, the queue
  left as it runs (a stage that waits for the host is charged the wait).

Both attribute time to the forward stages a model's backbones mark
(:mod:`mmapt.models.stages`), exclusively: a stage inside another is charged
to itself only. They attach to the model they are given through its
observers and forward hooks (removable handles): nothing is patched.
"""
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn

from mmapt.models.observers import HandleGroup
from mmapt.models.stages import listen_stages


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

    Stages are module forwards (:meth:`attach`, through forward hooks) and
    the stages a model marks (:meth:`listen`). A stage called inside
    another is charged to itself and not to its caller, so the stages of
    one forward add up to at most its time.

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

    def _enter(self) -> None:
        sync(self.device)
        self._stack.append([self.clock(), 0.])

    def _leave(self, name: str) -> None:
        sync(self.device)
        frame = self._stack.pop()
        elapsed = self.clock() - frame[0]
        if self._stack:
            self._stack[-1][1] += elapsed
        self.totals[name] = self.totals.get(name, 0.) + \
            (elapsed - frame[1]) * 1e3

    @contextmanager
    def listen(self, model: nn.Module) -> Iterator['StageTimer']:
        """Also time the forward stages ``model``'s backbones mark
        (:func:`mmapt.models.stages.forward_stage`)."""

        def on_stage(name: str, entering: bool) -> None:
            if entering:
                self._enter()
            else:
                self._leave(name)

        with listen_stages(model, on_stage):
            yield self

    @contextmanager
    def attach(
            self,
            stages: Sequence[Tuple[str, nn.Module]]) -> Iterator['StageTimer']:
        """Time the forward of ``module`` as stage ``name`` for each
        ``(name, module)`` (:func:`module_stage`); None modules are skipped.
        """
        handles = []
        for name, module in stages:
            if module is None:
                continue
            if not isinstance(module, nn.Module):
                raise TypeError(f'stage {name!r}: StageTimer.attach times '
                                'module forwards, got '
                                f'{type(module).__name__}')
            handles.append(
                module.register_forward_pre_hook(lambda *_: self._enter()))
            handles.append(
                module.register_forward_hook(
                    lambda *_, _name=name: self._leave(_name),
                    always_call=True))
        with HandleGroup(handles):
            yield self


def module_stage(name: str, module: nn.Module) -> Tuple[str, nn.Module]:
    """A :meth:`StageTimer.attach` entry timing a module's ``forward``."""
    return (name, module)


class StageClock:
    """Exclusive time of the marked forward stages, without synchronizing.

    CUDA: an event is recorded at every stage boundary and the times are
    read once, at :meth:`result`; the work is timed as the stream runs it,
    so the GPU queue is never drained by the measurement. Elsewhere:
    ``clock``.

    Args:
        device (torch.device): Where the forward runs.
        clock (Callable): Host clock (seconds) off CUDA.
    """

    def __init__(self,
                 device: torch.device,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.device = device
        self.clock = clock
        self._done: List[Tuple[str, object, object, list]] = []
        self._stack: List[Tuple[object, list]] = []

    def _mark(self) -> object:
        if self.device.type == 'cuda':
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self.clock()

    def _elapsed_ms(self, start, end) -> float:
        if self.device.type == 'cuda':
            return start.elapsed_time(end)
        return (end - start) * 1e3

    def _on_stage(self, name: str, entering: bool) -> None:
        if entering:
            self._stack.append((self._mark(), []))
            return
        start, children = self._stack.pop()
        entry = (name, start, self._mark(), children)
        if self._stack:
            self._stack[-1][1].append(entry)
        self._done.append(entry)

    @contextmanager
    def listen(self, model: nn.Module) -> Iterator['StageClock']:
        """Record the stages ``model``'s backbones mark inside the block."""
        with listen_stages(model, self._on_stage):
            yield self

    def result(self) -> Dict[str, float]:
        """Milliseconds per stage since the last call (synchronizes)."""
        sync(self.device)
        totals: Dict[str, float] = {}
        for name, start, end, children in self._done:
            own = self._elapsed_ms(start, end) - sum(
                self._elapsed_ms(s, e) for _, s, e, _ in children)
            totals[name] = totals.get(name, 0.) + own
        self._done = []
        return totals
