"""Static-shape mode (``pack_size``): same outputs as exact packing, fixed
shapes, no host reads, and a forward torch.compile and torch.export take
whole."""
import math

import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.benchmark.overhead import count_overhead
from mmapt.models import APTEVA02, APTViT
from mmapt.models.layers import attention
from mmapt.models.layers.attention import (AttentionCallCounter, StaticPlan,
                                           VarlenPlan, attention_backend,
                                           capacity_classes,
                                           count_attention_calls,
                                           static_kernel, varlen_attention)
from mmapt.tokenizer import build_layout, select_patches
from mmapt.tokenizer.layout import padding_group_size

TINY = dict(embed_dims=32, num_layers=2, num_heads=1)
CFG = dict(
    img_size=256,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1))


def _pair(cls=APTEVA02, pack_size=256, **kwargs):
    """A static-mode model and an exact one with the same weights."""
    torch.manual_seed(0)
    arch = dict(TINY, scale_mlp=False) if cls is APTEVA02 else TINY
    cfg = dict(arch=arch, thresholds=(2, 2), **CFG, **kwargs)
    static = cls(pack_size=pack_size, **cfg).eval()
    exact = cls(**cfg).eval()
    exact.load_state_dict(static.state_dict())
    return static, exact


def _two_images(batch=1):
    """Two inputs of one bucket with different token counts."""
    return (flat_and_noise_images(batch, 256, 256, (128, 128), 0),
            flat_and_noise_images(batch, 256, 256, (64, 192), 1))


def _assert_maps_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls, kwargs',
                         [(APTEVA02, {}),
                          (APTViT, dict(num_register_tokens=2))])
def test_static_outputs_equal_exact_packing(cls, kwargs):
    static, exact = _pair(cls, pack_size=2 * 300, **kwargs)
    with torch.no_grad():
        for x in _two_images(batch=2):
            _assert_maps_equal(static(x), exact(x))


def test_shapes_fixed_and_no_host_read():
    static, exact = _pair()
    layouts = []
    with torch.no_grad():
        for x in _two_images():
            exact_layout = exact.tokenize(x)
            layout = static.tokenize(x)
            layouts.append(layout)
            assert layout.num_packed == 256
            assert layout.num_tokens == exact_layout.num_tokens < 256
            counts = count_overhead(lambda: static(x))
            assert counts.total_syncs == 0, counts.sync_sites
            assert count_overhead(lambda: exact(x)).total_syncs == 1
    assert layouts[0].num_tokens != layouts[1].num_tokens
    for name in ('cu_seqlens_image', 'cu_seqlens_window', 'cell_to_token',
                 'embed_index', 'position_index', 'packed_image_index'):
        a, b = (getattr(layout, name) for layout in layouts)
        assert a.shape == b.shape and a.dtype == b.dtype, name
    # Padding groups close the offsets at exactly pack_size.
    assert int(layouts[0].cu_seqlens_window[-1]) == 256


def test_compile_fullgraph_one_graph_per_bucket():
    static, _ = _pair()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(static, fullgraph=True, backend=backend)
    with torch.no_grad():
        for x in _two_images():
            _assert_maps_equal(compiled(x), static(x))
    assert len(graphs) == 1  # no recompilation for the second image


def test_export_matches_eager():
    static, exact = _pair()
    first, second = _two_images()
    with torch.no_grad():
        program = torch.export.export(static, (first, ))
        for x in (first, second):
            _assert_maps_equal(program.module()(x), exact(x))


def test_static_gradients_equal_exact():
    static, exact = _pair()
    x = _two_images()[0]
    for model in (static, exact):
        model.train()
        model(x)[-1].square().mean().backward()
    for (name, a), b in zip(static.named_parameters(), exact.parameters()):
        if b.grad is None:
            assert a.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_pack_size_errors_and_overflow_is_capped():
    static, exact = _pair(pack_size=4)  # < 16 tokens of 64 px: never fits
    x = _two_images()[0]
    with pytest.raises(ValueError, match='pack_size=4 is too small'):
        static(x)
    with pytest.raises(ValueError, match='pack_size=0 is not valid'):
        static.apt.pack_size = 0
    static.apt.pack_size = 20  # fits a flat image, not this one
    with torch.no_grad():
        outs = static(x)
        layout = static.tokenize(x)
    assert all(bool(o.isfinite().all()) for o in outs)
    assert bool(layout.capped) and not bool(layout.overflow)
    assert layout.num_real_packed <= 20
    layout.check_fits()
    static.apt.pack_size = None  # back to exact packing
    with torch.no_grad():
        _assert_maps_equal(static(x), exact(x))


@pytest.mark.parametrize('seed', range(4))
def test_static_plan_equals_varlen_plan(seed):
    gen = torch.Generator().manual_seed(seed)
    # Groups of up to 200 tokens: the rank bounds give several classes.
    lengths = torch.randint(0, 201, (7, ), generator=gen).tolist()
    lengths[0] = max(lengths[0], 1)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    total = int(cu[-1])
    pad = 5  # tokens after the groups (static mode's padding)
    q, k, v = (
        t.requires_grad_() for t in torch.randn(
            3, total + pad, 2, 8, generator=gen, dtype=torch.float64))
    want = VarlenPlan(cu, max(lengths))(q[:total], k[:total], v[:total])
    plan = StaticPlan(cu, len(lengths), 200, total + pad)
    got = plan(q, k, v)
    assert plan.kernel == 'static_sdpa' and len(plan.classes) > 1
    torch.testing.assert_close(got[:total], want)
    assert bool(got.isfinite().all())
    # Gradients too: padding rows and padded slots contribute nothing.
    weight = torch.randn(total, 2, 8, generator=gen, dtype=torch.float64)
    grads = [
        torch.autograd.grad((out[:total] * weight).sum(), (q, k, v))
        for out in (got, want)
    ]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert not any(bool(g[total:].any()) for g in grads[0])


@pytest.mark.parametrize('seed', range(20))
def test_capacity_classes_bound_every_rank(seed):
    """Any groups of at most ``bound`` tokens summing to at most P fit the
    capacities, sorted by length; the plan's work follows P."""
    gen = torch.Generator().manual_seed(seed)
    groups = int(torch.randint(1, 40, (1, ), generator=gen))
    bound = int(torch.randint(1, 1200, (1, ), generator=gen))
    pack = int(torch.randint(1, groups * bound + 1, (1, ), generator=gen))
    # Lengths at the bound first (the worst case), cut to sum to P.
    lengths = torch.randint(
        bound // 2, bound + 1, (groups, ), generator=gen).tolist()
    room = pack
    for i, n in enumerate(lengths):
        lengths[i] = min(n, room)
        room -= lengths[i]
    classes = capacity_classes(groups, bound, pack)
    assert sum(ranks for ranks, _ in classes) == groups
    capacities = [c for ranks, c in classes for _ in range(ranks)]
    assert capacities == sorted(capacities, reverse=True)
    assert all(1 <= c <= bound for c in capacities)
    for n, c in zip(sorted(lengths, reverse=True), capacities):
        assert n <= c
    assert capacity_classes(groups, bound, pack) == classes  # no data


def test_static_plan_cost_follows_the_bucket():
    """EVA-02 at 1536 (96 x 96 cells, windows of 32 x 32), one image in a
    6144-token bucket: the global group costs the bucket, not the grid,
    and the windows less than all their cells."""
    image = capacity_classes(1, 96 * 96, 6144)
    assert image == [(1, 6144)]
    windows = capacity_classes(9, 1024, 6144)
    rows = sum(n * c for n, c in windows)
    assert rows < 9 * 1024
    work = sum(n * c * c for n, c in windows)
    assert work < 0.9 * 9 * 1024**2
    cu = torch.tensor([0, 6000, 6144])  # a real group, a padding group
    plan = StaticPlan(cu, 1, 96 * 96, 6144)
    assert plan.padded_rows == 6144


def test_static_kernel_choice():
    cuda, cpu = torch.device('cuda'), torch.device('cpu')
    flash = attention._torch_varlen_attn is not None
    for dtype in (torch.float16, torch.bfloat16):
        assert static_kernel(
            cuda, dtype) == ('static_varlen' if flash else 'static_sdpa')
    assert static_kernel(cuda, torch.float32) == 'static_sdpa'
    assert static_kernel(cpu, torch.bfloat16) == 'static_sdpa'
    assert static_kernel(cuda, torch.bfloat16, 'padded') == 'static_sdpa'
    with pytest.raises(ValueError, match='needs CUDA'):
        static_kernel(cpu, torch.float32, 'varlen')
    with pytest.raises(ValueError, match='backend must be one of'):
        StaticPlan(torch.tensor([0, 4]), 1, 4, 4, backend='flash')
    with pytest.raises(ValueError, match='kernel must be one of'):
        StaticPlan(torch.tensor([0, 4]), 1, 4, 4, kernel='flash')


def _static_layout(seed=0, pack_size=2 * 16 * 24 + 2):
    gen = torch.Generator().manual_seed(seed)
    entropies = [
        torch.rand(2, 16 >> s, 24 >> s, generator=gen) * 4 for s in (1, 2)
    ]
    masks = select_patches(entropies, (2., 2.), (16, 24))
    exact = build_layout(masks, (16, 24), 8, num_prefix_tokens=1)
    static = build_layout(
        masks, (16, 24), 8, num_prefix_tokens=1, pack_size=pack_size)
    return exact, static


def test_fixed_length_offsets_equal_exact_packing():
    """The offsets static mode hands the varlen kernel: a length fixed by
    (batch, grid, pack_size), groups within ``max_seqlen``, and a CPU
    reference of varlen attention over them equals exact packing."""
    pack = 700
    shapes = set()
    for seed in range(3):
        exact, static = _static_layout(seed, pack)
        n = exact.num_packed
        assert n < pack and not bool(static.overflow)
        for kind in ('window', 'image'):
            cu = getattr(static, f'cu_seqlens_{kind}')
            bound = getattr(static, f'max_seqlen_{kind}')
            real = getattr(static, f'num_real_groups_{kind}')
            shapes.add((kind, tuple(cu.shape), cu.dtype, bound))
            lengths = cu.diff()
            assert int(cu[0]) == 0 and int(cu[-1]) == pack
            assert bool((lengths >= 0).all())
            assert int(lengths.max()) <= bound
            assert int(lengths[real:].max()) <= padding_group_size(bound)
            assert cu.numel() == real + 1 + math.ceil(
                pack / padding_group_size(bound))
            # Reference varlen attention on the padded sequence.
            gen = torch.Generator().manual_seed(seed)
            q, k, v = torch.randn(3, pack, 2, 8, generator=gen)
            got = VarlenPlan(cu, bound)(q, k, v)[:n]
            reference = VarlenPlan(
                getattr(exact, f'cu_seqlens_{kind}'),
                getattr(exact, f'max_seqlen_{kind}'))
            want = reference(q[:n], k[:n], v[:n])
            torch.testing.assert_close(got, want)
    assert len(shapes) == 2  # one shape per grouping, whatever the data


def _reference_varlen(calls):
    """A CPU stand-in for torch's varlen kernel (per-group SDPA), noting
    the arguments it is called with."""

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k):
        calls.append((cu_q, cu_k, max_q, max_k))
        return VarlenPlan(cu_q, max_q)(q, k, v)

    return varlen


def test_static_varlen_route_equals_exact(monkeypatch):
    """What runs on CUDA fp16/bf16, with a CPU reference in place of the
    kernel: the whole static forward equals exact packing, the kernel gets
    the layout's fixed-length offsets and bounds, and the calls are
    counted as 'static_varlen'."""
    calls = []
    monkeypatch.setattr(attention, '_torch_varlen_attn',
                        _reference_varlen(calls))
    monkeypatch.setattr(attention, 'static_kernel',
                        lambda device, dtype, backend: 'static_varlen')
    static, exact = _pair()
    with torch.no_grad():
        for x in _two_images():
            layout = static.tokenize(x)
            calls.clear()
            with count_attention_calls(static) as counted:
                outs = static(x)
            _assert_maps_equal(outs, exact(x))
            assert counted['static_varlen'] == 2 == len(calls)
            assert counted['static_sdpa'] == counted['varlen'] == 0
            for cu_q, cu_k, max_q, max_k in calls:
                assert cu_q is cu_k and cu_q.dtype == torch.int32
                assert cu_q.shape in {
                    layout.cu_seqlens_window.shape,
                    layout.cu_seqlens_image.shape
                }
                assert (max_q, max_k) in {(layout.max_seqlen_window, ) * 2,
                                          (layout.max_seqlen_image, ) * 2}


def test_static_varlen_failure_raises(monkeypatch):
    """No hidden switch: the static plan's kernel failing is an error that
    names the fix, not a silent fallback."""

    def broken(*args):
        raise RuntimeError('no kernel image for this GPU')

    monkeypatch.setattr(attention, '_torch_varlen_attn', broken)
    q = torch.randn(8, 1, 4)
    cu = torch.tensor([0, 5, 8], dtype=torch.int32)
    plan = StaticPlan(cu, 1, 5, 8, kernel='static_varlen')
    with pytest.raises(
            RuntimeError, match=r"attention_backend\(model, 'padded'\)"):
        varlen_attention(q, q, q, cu, 5, plan=plan)
    counter = AttentionCallCounter()
    StaticPlan(cu, 1, 5, 8)(q, q, q, (counter, ))
    assert counter.counts['static_sdpa'] == 1


def test_static_forward_counts_its_kernel():
    static, _ = _pair()
    with torch.no_grad(), count_attention_calls(static) as counted:
        static(_two_images()[0])
    assert counted == dict(
        varlen=0, padded=0, varlen_failed=0, static_varlen=0, static_sdpa=2)


def test_attention_backend_is_scoped_to_a_model():
    static, exact = _pair()
    assert static.attention_backend == 'auto'
    with attention_backend(torch.nn.Sequential(static), 'padded'):
        assert static.attention_backend == 'padded'
        assert exact.attention_backend == 'auto'  # another model
    assert static.attention_backend == 'auto'
    with pytest.raises(ValueError, match='one of'):
        with attention_backend(static, 'flash'):
            pass
    with pytest.raises(ValueError, match='one of'):
        static.attention_backend = 'flash'
    with pytest.raises(TypeError, match='packed-attention backend'):
        with attention_backend(torch.nn.Linear(2, 2), 'padded'):
            pass
    q = torch.randn(4, 1, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match='needs CUDA'):
        varlen_attention(q, q, q, cu, 4, backend='varlen')
    # The forward reads the model's choice: 'varlen' cannot run on a CPU.
    x = _two_images()[0]
    exact.attention_backend = 'varlen'
    with torch.no_grad(), pytest.raises(ValueError, match='needs CUDA'):
        exact(x)
    with torch.no_grad(), attention_backend(static, 'varlen'), \
            pytest.raises(ValueError, match='needs CUDA'):
        static(x)
    with torch.no_grad(), count_attention_calls(static) as counted:
        static(x)  # 'auto' again
    assert counted['static_sdpa'] == 2


def test_build_layout_static_matches_exact():
    gen = torch.Generator().manual_seed(0)
    entropies = [
        torch.rand(2, 16 >> s, 24 >> s, generator=gen) * 4 for s in (1, 2)
    ]
    masks = select_patches(entropies, (2., 2.), (16, 24))
    exact = build_layout(masks, (16, 24), 8, num_prefix_tokens=1)
    static = build_layout(
        masks, (16, 24), 8, num_prefix_tokens=1, pack_size=2 * 16 * 24 + 2)
    n = exact.num_packed
    assert torch.equal(static.cell_to_token, exact.cell_to_token)
    assert torch.equal(static.embed_index[:n], exact.embed_index)
    assert torch.equal(static.content_index, exact.content_index)
    assert not bool(static.overflow)
    static.check_fits()
