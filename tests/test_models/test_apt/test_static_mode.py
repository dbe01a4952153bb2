"""Static-shape mode (``pack_size``): same outputs as exact packing, fixed
shapes, no host reads, and a forward torch.compile and torch.export take
whole."""
import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.models import APTEVA02, APTViT
from mmapt.models.layers.attention import (StaticPlan, VarlenPlan,
                                           attention_backend,
                                           get_attention_backend,
                                           varlen_attention)
from mmapt.tokenizer import build_layout, select_patches
from mmapt.utils.overhead import count_overhead

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


@pytest.mark.parametrize('seed', range(3))
def test_static_plan_equals_varlen_plan(seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 9, (6, ), generator=gen).tolist()
    lengths[0] = max(lengths[0], 1)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())
    total = int(cu[-1])
    pad = 5  # tokens after the groups (static mode's padding)
    q, k, v = torch.randn(3, total + pad, 2, 8, generator=gen)
    want = VarlenPlan(cu, max(lengths))(q[:total], k[:total], v[:total])
    got = StaticPlan(cu, len(lengths), 8, total + pad)(q, k, v)
    torch.testing.assert_close(got[:total], want)
    assert bool(got.isfinite().all())


def test_attention_backend_is_scoped():
    assert get_attention_backend() == 'auto'
    with attention_backend('padded'):
        assert get_attention_backend() == 'padded'
    assert get_attention_backend() == 'auto'
    with pytest.raises(ValueError, match='one of'):
        with attention_backend('flash'):
            pass
    q = torch.randn(4, 1, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with attention_backend('varlen'), pytest.raises(
            ValueError, match='needs CUDA'):
        varlen_attention(q, q, q, cu, 4)


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
