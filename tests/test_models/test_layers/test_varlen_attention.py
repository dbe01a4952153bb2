"""varlen_attention against per-sequence scaled_dot_product_attention."""
import pytest
import torch
import torch.nn.functional as F

from mmapt.models.layers import VarlenPlan, varlen_attention
from mmapt.models.layers.attention import build_plans


def _cu(lengths):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu


def _reference(q, k, v, lengths):
    outs, start = [], 0
    for n in lengths:
        sl = slice(start, start + n)
        start += n
        if n == 0:
            continue
        o = F.scaled_dot_product_attention(*(t[sl].transpose(0, 1)[None]
                                             for t in (q, k, v)))
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs)


def _inputs(total, heads=2, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(
            total,
            heads,
            dim,
            generator=gen,
            dtype=torch.float64,
            requires_grad=True) for _ in range(3)
    ]


@pytest.mark.parametrize(
    'lengths',
    [
        [1, 300, 7, 7, 150, 2, 64, 1, 33, 299, 5],  # ragged, 1..300
        [17, 17, 17, 17],  # uniform: one reshaped call, no mask
        [40, 0, 40, 3],  # an empty group
        [250],  # a single group
        [3, 4, 3, 4, 3, 4, 5, 6, 2, 1],  # many tiny groups: padded buckets
    ])
def test_forward_and_backward_match_per_sequence(lengths):
    q, k, v = _inputs(sum(lengths))
    cu = _cu(lengths)
    out = varlen_attention(q, k, v, cu, max(lengths))
    ref = _reference(q, k, v, lengths)
    assert out.shape == q.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)

    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_groups_do_not_leak():
    """Changing one group's keys/values leaves the other groups' outputs."""
    lengths = [5, 9, 4, 9]
    q, k, v = (t.detach() for t in _inputs(sum(lengths)))
    cu = _cu(lengths)
    plan = VarlenPlan(cu)
    base = plan(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[5:14] += 3.0
    v2[5:14] -= 2.0
    other = plan(q, k2, v2)
    keep = torch.ones(len(q), dtype=torch.bool)
    keep[5:14] = False
    assert torch.equal(base[keep], other[keep])
    assert not torch.allclose(base[5:14], other[5:14])


def test_plan_reuse_and_sharing():
    lengths = [3, 8, 8, 1]
    q, k, v = (t.detach() for t in _inputs(sum(lengths)))
    cu = _cu(lengths)
    plan = VarlenPlan(cu, max(lengths))
    first = varlen_attention(q, k, v, cu, 8, plan=plan)
    second = varlen_attention(q * 2, k, v, cu, 8, plan=plan)
    assert torch.allclose(first, _reference(q, k, v, lengths))
    assert torch.allclose(second, _reference(q * 2, k, v, lengths))
    a, b = build_plans((cu, 8), (cu.clone(), 8))
    assert a is b
    with pytest.raises(ValueError, match='covers 20 tokens'):
        plan(q[:5], k[:5], v[:5])
