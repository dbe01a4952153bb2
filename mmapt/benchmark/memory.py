"""Peak memory of one call, for the benchmarks (CPU and CUDA).

CPU: the kernel's own peak of the process's resident size (``VmHWM`` of
``/proc/self/status``), reset to the current size just before the call by
writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0): exact, and it
costs the call nothing. Where the kernel refuses the reset (older kernels,
some sandboxes), :class:`PeakRSS` falls back, when asked to, to the resident
size sampled every 0.5 ms from another thread, which can miss a peak
shorter than that and takes some CPU from the call (so timed runs do not
ask for it). Either way the peak is that of the whole process: meaningful
in a process that runs nothing else meanwhile.
"""
import os
import threading
import time
from typing import Callable, Optional

import torch

_STATUS = '/proc/self/status'
_STATM = '/proc/self/statm'
_CLEAR_REFS = '/proc/self/clear_refs'
#: Seconds between two samples of the fallback.
SAMPLE_INTERVAL_S = 0.0005


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open(_STATM) as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def status_mib(key: str) -> Optional[float]:
    """A size of ``/proc/self/status`` (e.g. ``'VmRSS'``, ``'VmHWM'``) in
    MiB; None where the kernel does not report it."""
    try:
        with open(_STATUS) as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak resident size (``VmHWM``) of this process to
    its current size; False where the kernel does not allow it."""
    try:
        with open(_CLEAR_REFS, 'w') as f:
            f.write('5')
    except OSError:
        return False
    return status_mib('VmHWM') is not None


class PeakRSS:
    """``with PeakRSS() as peak: call()``: ``peak.extra_mib`` is what the
    block added to the process's peak resident size, in MiB.

    Args:
        sample (bool): Where the kernel's peak cannot be reset, sample the
            resident size from a thread instead (``method`` ``'sampled'``);
            False: no measure there (``extra_mib`` None), e.g. around a
            timed call. Defaults to True.

    Attributes:
        method (str, optional): ``'kernel'``, ``'sampled'`` or None (not
            measured).
        extra_mib (float, optional): Peak during the block minus the
            resident size just before it (>= 0); None when not measured.
    """

    def __init__(self, sample: bool = True) -> None:
        self.sample = sample
        self.method: Optional[str] = None
        self.extra_mib: Optional[float] = None
        self._before = 0.
        self._peak = 0.
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> 'PeakRSS':
        if reset_peak_rss():
            self.method = 'kernel'
            self._before = status_mib('VmRSS')
        elif self.sample and os.path.exists(_STATM):
            self.method = 'sampled'
            self._before = self._peak = rss_mib()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        # torch and onnxruntime release the GIL in their kernels, so this
        # thread samples while they allocate.
        while not self._done.is_set():
            self._peak = max(self._peak, rss_mib())
            time.sleep(SAMPLE_INTERVAL_S)

    def __exit__(self, *exc) -> None:
        if self.method == 'kernel':
            peak = status_mib('VmHWM')
        elif self.method == 'sampled':
            self._done.set()
            self._thread.join()
            peak = max(self._peak, rss_mib())
        else:
            return
        self.extra_mib = max(0., peak - self._before)


def peak_memory_mib(
    call: Callable[[], object], device: torch.device = torch.device('cpu')
) -> float:
    """Peak extra memory (MiB) while ``call`` runs.

    CUDA: ``max_memory_allocated`` above what was allocated before. CPU:
    :class:`PeakRSS` (the kernel's peak resident size, else sampled), which
    is meaningful in a fresh process, where freed pages have not been kept
    by the allocator yet.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with PeakRSS() as peak:
        call()
    if peak.extra_mib is None:
        raise RuntimeError('CPU peak memory is read from /proc (Linux); '
                           'this system has no /proc/self/statm')
    return peak.extra_mib
