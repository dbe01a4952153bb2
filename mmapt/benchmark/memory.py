"""Peak memory of one call, for the analysis tools (CPU and CUDA)."""
import os
import threading
import time
from typing import Callable

import torch


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_memory_mib(
    call: Callable[[], object], device: torch.device = torch.device('cpu')
) -> float:
    """Peak extra memory (MiB) while ``call`` runs.

    CUDA: ``max_memory_allocated`` above what was allocated before. CPU: the
    resident set sampled every 0.5 ms from another thread (torch releases
    the GIL in its kernels, so the sampler runs while they allocate) minus
    its value just before; meaningful in a fresh process, where freed pages
    have not been kept by the allocator yet.
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = rss_mib()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        call()
    finally:
        done.set()
        thread.join()
    return max(peak[0], rss_mib()) - before
