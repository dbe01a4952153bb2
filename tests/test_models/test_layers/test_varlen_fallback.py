"""'auto' falls back from torch's varlen kernel per call, counted, never
for the rest of the process.

There is no CUDA here: the tests stand in a kernel that raises (or works
once) and let ``_use_varlen_kernel`` treat the CPU inputs as eligible, so
the dispatch's own fallback path runs.
"""
import pytest
import torch

from mmapt.models.layers import attention
from mmapt.models.layers.attention import (AttentionCallCounter,
                                           VarlenFallbackWarning, VarlenPlan,
                                           varlen_attention)

LENGTHS = [5, 3, 8]


def _inputs():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(sum(LENGTHS), 2, 8, generator=gen) for _ in range(3))
    cu = torch.tensor([0, 5, 8, 16], dtype=torch.int32)
    return q, k, v, cu


@pytest.fixture
def kernel(monkeypatch):
    """A varlen kernel that raises on the calls listed in ``fail`` (call
    indices); ``calls`` counts every attempt."""
    state = dict(calls=0, fail=set())

    def fake(q, k, v, cu_q, cu_k, max_q, max_k):
        index = state['calls']
        state['calls'] += 1
        if index in state['fail']:
            raise RuntimeError('no kernel image is available for this GPU')
        return VarlenPlan(cu_q, max_q)(q, k, v)

    monkeypatch.setattr(attention, '_torch_varlen_attn', fake)
    monkeypatch.setattr(attention, '_use_varlen_kernel',
                        lambda q, backend: True)
    return state


def test_failure_falls_back_for_that_call_only(kernel):
    q, k, v, cu = _inputs()
    reference = VarlenPlan(cu, 8)(q, k, v)
    kernel['fail'] = {0, 1}
    counter = AttentionCallCounter()
    with pytest.warns(VarlenFallbackWarning, match='this call ran'):
        outs = [
            varlen_attention(q, k, v, cu, 8, observers=(counter, ))
            for _ in range(3)
        ]
    counts = counter.counts
    # Every call tried the kernel: the failures were not remembered.
    assert kernel['calls'] == 3
    assert (counts['varlen'], counts['padded'],
            counts['varlen_failed']) == (1, 2, 2)
    for out in outs:
        torch.testing.assert_close(out, reference)
    assert attention.cuda_varlen_enabled()


def test_varlen_backend_raises_instead(kernel):
    q, k, v, cu = _inputs()
    kernel['fail'] = {0}
    counter = AttentionCallCounter()
    with pytest.raises(RuntimeError, match='no kernel image'):
        varlen_attention(
            q, k, v, cu, 8, backend='varlen', observers=(counter, ))
    assert not any(counter.counts.values())


def test_no_kernel_in_this_build(monkeypatch):
    monkeypatch.setattr(attention, '_torch_varlen_attn', None)
    assert not attention.cuda_varlen_enabled()
    q, k, v, cu = _inputs()
    counter = AttentionCallCounter()
    varlen_attention(q, k, v, cu, 8, observers=(counter, ))
    counts = counter.counts
    assert (counts['varlen'], counts['padded'],
            counts['varlen_failed']) == (0, 1, 0)
