"""CUDA graphs and the profiler table of the GPU benchmark.

A CUDA graph replays a captured forward's kernels with no Python and no
launch overhead, but only for the exact shapes it was captured with, and
only when the forward never waits for the device (no host sync). The
plain backbone qualifies per input shape; APT qualifies in its static-shape
mode (``backbone.apt.pack_size``), one graph per bucket of packed length.
:class:`GraphedForward` is the models' own (a backbone's
``accelerate='cuda_graphs'``); it is re-exported here.
"""
from contextlib import nullcontext
from typing import Callable, Dict, Hashable, List, Optional

import torch
from torch import nn

from mmapt.models.backbones.accelerate import GraphedForward
from mmapt.models.stages import listen_stages


def autocast_for(device: torch.device,
                 dtype: Optional[torch.dtype],
                 cache: bool = True):
    """``torch.autocast`` to ``dtype`` (a no-op context for None / fp32).
    ``cache=False`` for graph capture: autocast's weight-cast cache would
    hand the graph tensors freed after capture."""
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


class GraphCache:
    """One :class:`GraphedForward` per key (an input shape, a bucket),
    captured on first use; capture failures are kept, not raised twice."""

    def __init__(self, fn_for: Callable[[Hashable], Callable]) -> None:
        self.fn_for = fn_for
        self.graphs: Dict[Hashable, GraphedForward] = {}
        self.errors: Dict[Hashable, str] = {}

    def get(self, key: Hashable, example: torch.Tensor) -> GraphedForward:
        if key in self.errors:
            raise RuntimeError(self.errors[key])
        if key not in self.graphs:
            try:
                self.graphs[key] = GraphedForward(self.fn_for(key), example)
            except Exception as err:  # noqa: BLE001 - reported per arm
                self.errors[key] = f'{type(err).__name__}: {err}'
                raise
        return self.graphs[key]


def _device_time_us(event) -> float:
    """Self device time of a profiler event (attribute names by torch
    version)."""
    for name in ('self_device_time_total', 'self_cuda_time_total'):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.


def _total_device_time_us(event) -> float:
    for name in ('device_time_total', 'cuda_time_total'):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.


def _kernel_busy_ms(prof) -> float:
    """Time in which at least one kernel ran (the union of the kernels'
    intervals), in ms; the sum of the ops' self device time when the
    profiler lists no kernel events."""
    kernels = sorted(
        (e.time_range.start, e.time_range.end) for e in prof.events()
        if getattr(e, 'device_type', None) == torch.autograd.DeviceType.CUDA)
    if not kernels:
        return sum(_device_time_us(e) for e in prof.key_averages()) / 1e3
    busy, (start, end) = 0., kernels[0]
    for s, e in kernels[1:]:
        if s > end:
            busy += end - start
            start, end = s, e
        else:
            end = max(end, e)
    return (busy + end - start) / 1e3


def profile_forward(fn: Callable[[], object],
                    device: torch.device,
                    model: nn.Module,
                    row_limit: int = 25) -> dict:
    """One call of ``fn`` under ``torch.profiler``, every forward stage
    ``model`` marks a ``record_function`` range.

    Returns a dict: ``table`` (the profiler's table, sorted by device time
    on CUDA, CPU time otherwise), ``stages`` (per stage: CPU time and, on
    CUDA, the device time of the kernels it launched, in ms),
    ``forward_ms`` (the call's duration, CUDA events on a GPU),
    ``kernel_ms`` (device time of all kernels) and ``gpu_idle_ms`` /
    ``gpu_idle_share`` (forward time in which no kernel ran; None off
    CUDA).
    """
    from torch.profiler import ProfilerActivity, profile, record_function
    activities = [ProfilerActivity.CPU]
    cuda = device.type == 'cuda'
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    ranges: List = []

    def on_stage(name: str, entering: bool) -> None:
        if entering:
            ranges.append(record_function(name))
            ranges[-1].__enter__()
        else:
            ranges.pop().__exit__(None, None, None)

    from mmapt.benchmark.timing import time_call
    with profile(activities=activities) as prof, \
            listen_stages(model, on_stage):
        forward_ms, _ = time_call(fn, device)
    averages = prof.key_averages()
    from mmapt.models.stages import STAGES
    stages = {}
    for event in averages:
        if event.key in STAGES:
            stages[event.key] = dict(
                cpu_ms=round(event.cpu_time_total / 1e3, 3),
                device_ms=round(_total_device_time_us(event) /
                                1e3, 3) if cuda else None)
    kernel_ms = _kernel_busy_ms(prof) if cuda else None
    sort = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    try:
        table = averages.table(sort_by=sort, row_limit=row_limit)
    except (AttributeError, KeyError):  # renamed columns in newer torch
        table = averages.table(
            sort_by='self_device_time_total' if cuda else sort,
            row_limit=row_limit)
    idle = None if kernel_ms is None else max(forward_ms - kernel_ms, 0.)
    return dict(
        table=table,
        stages=stages,
        forward_ms=round(forward_ms, 3),
        kernel_ms=None if kernel_ms is None else round(kernel_ms, 3),
        gpu_idle_ms=None if idle is None else round(idle, 3),
        gpu_idle_share=None if idle is None else round(idle / forward_ms, 4))
