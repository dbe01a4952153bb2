"""The one peak-memory helper: the kernel's peak resident size, reset per
call, and the sampling fallback where the kernel refuses the reset."""
import time

import numpy as np
import pytest

from mmapt.benchmark import memory
from mmapt.benchmark.memory import PeakRSS, peak_memory_mib
from mmapt.deploy.benchmark import timed_run

MIB = 2**20
pytestmark = pytest.mark.skipif(
    not memory.reset_peak_rss(),
    reason='the kernel peak (VmHWM reset through /proc/self/clear_refs) '
    'needs Linux >= 4.0')


def hold(mib: int, seconds: float = 0.05):
    """A call that touches ``mib`` MiB and holds it ``seconds``."""

    def call():
        block = np.ones(mib * MIB, np.uint8)
        time.sleep(seconds)
        return int(block[::4096].sum())

    return call


@pytest.fixture
def no_kernel_peak(monkeypatch, tmp_path):
    """A kernel that refuses the reset of its peak."""
    monkeypatch.setattr(memory, '_CLEAR_REFS',
                        str(tmp_path / 'missing' / 'clear_refs'))


def test_kernel_peak_sees_the_call_and_not_an_earlier_peak():
    # An earlier, larger peak of this process: the reset forgets it.
    hold(300, 0.)()
    with PeakRSS() as small:
        hold(40, 0.)()
    assert small.method == 'kernel'
    assert 35 <= small.extra_mib < 120
    with PeakRSS() as big:
        hold(200, 0.)()  # freed before the block ends: still the peak
    assert 190 <= big.extra_mib < 300
    assert 190 <= peak_memory_mib(hold(200, 0.)) < 300


def test_fallback_samples_where_the_kernel_refuses(no_kernel_peak):
    assert not memory.reset_peak_rss()
    # Held 0.2 s: the sampler thread gets its turn on a loaded machine.
    with PeakRSS() as peak:
        hold(200, 0.2)()
    assert peak.method == 'sampled'
    assert 190 <= peak.extra_mib < 300
    assert 190 <= peak_memory_mib(hold(200, 0.2)) < 300


def test_timed_runs_are_not_sampled(no_kernel_peak):
    with PeakRSS(sample=False) as peak:
        hold(50, 0.)()
    assert peak.method is None and peak.extra_mib is None
    ms, gib = timed_run(hold(50, 0.01))
    assert ms >= 10 and gib is None


def test_timed_run_reports_gib_from_the_kernel():
    ms, gib = timed_run(hold(200, 0.))
    assert ms > 0 and 190 / 1024 <= gib < 300 / 1024
