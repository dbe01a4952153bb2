"""Real-valued 2D RoPE: every path equals the pair formula, no complex
tensor anywhere (eager, compiled, exported)."""
import pytest
import torch

from mmapt.models import EVA02
from mmapt.models.layers import RotaryEmbedding2D, apply_rope, identity_rope
from mmapt.models.layers import rope as rope_module
from mmapt.models.layers import swap_pairs

TINY = dict(embed_dims=64, num_layers=2, num_heads=2)


def _angles(rows, cols, grid_len=None, head_dim=32):
    rope = RotaryEmbedding2D(head_dim, 16)
    r, c = torch.meshgrid(
        torch.arange(rows).float(), torch.arange(cols).float(), indexing='ij')
    coords = torch.stack([r, c], -1).reshape(-1, 2)
    grid_len = grid_len or (rows, cols)
    return rope.angles(coords, grid_len), rope(coords, grid_len)


def _reference(x, angles):
    """The rotation written from its formula, in float64: per pair
    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    x0, x1 = x.double()[..., 0::2], x.double()[..., 1::2]
    cos, sin = angles.double().cos(), angles.double().sin()
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin],
                       -1).flatten(-2)


def _qk_slice(tokens, heads=2, head_dim=32, dtype=torch.float32):
    """The strided q|k slice of a fresh (B, L, 3, heads, hd) projection, as
    the EVA-02 block hands it to apply_rope."""
    torch.manual_seed(0)
    qkv = torch.randn(2, tokens, 3, heads, head_dim).to(dtype)
    return qkv, qkv[..., :2, :, :]


def test_table_rows_hold_cos_and_signed_sin():
    angles, table = _angles(3, 5)
    assert table.shape == (15, 2, 32) and table.dtype == torch.float32
    cos, sin = angles.cos(), angles.sin()
    assert torch.equal(table[:, 0, 0::2], cos)
    assert torch.equal(table[:, 0, 1::2], cos)
    assert torch.equal(table[:, 1, 0::2], -sin)
    assert torch.equal(table[:, 1, 1::2], sin)


@pytest.mark.parametrize('inplace', [False, True])
def test_rotation_equals_pair_formula_fp32(inplace):
    angles, table = _angles(4, 6)
    qkv, x = _qk_slice(24)
    want = _reference(x, angles[:, None, None])
    with torch.no_grad():
        got = apply_rope(x, table[:, None, None], inplace=inplace)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)
    # In place: the caller's q|k slice itself holds the result.
    assert (got.data_ptr() == qkv.data_ptr()) == inplace
    assert torch.equal(qkv[..., :2, :, :], got) == inplace


def test_inplace_chunks_and_broadcasts(monkeypatch):
    """Many chunks (a tiny cache budget), along tokens for the dense layout
    and along the batch when it is the longest dim (window batches)."""
    monkeypatch.setattr(rope_module, '_CHUNK_ELEMENTS', 300)
    angles, table = _angles(3, 3)
    for batch, tokens in ((2, 9), (40, 9)):
        torch.manual_seed(batch)
        x = torch.randn(batch, tokens, 2, 2, 32)
        want = _reference(x, angles[:, None, None])
        with torch.no_grad():
            got = apply_rope(x, table[:, None, None], inplace=True)
        assert got is x
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)
    # Packed layout: (N, q|k, heads, hd) with an (N, 1, 1, 2, hd) table.
    x = torch.randn(9, 2, 2, 32)
    want = _reference(x, angles[:, None, None])
    with torch.no_grad():
        got = apply_rope(x.clone(), table[:, None, None], inplace=True)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize('inplace', [False, True])
def test_bf16_computes_in_fp32_and_rounds_once(inplace):
    angles, table = _angles(4, 6)
    _, x = _qk_slice(24, dtype=torch.bfloat16)
    want = _reference(x, angles[:, None, None]).float().bfloat16()
    with torch.no_grad():
        got = apply_rope(x, table[:, None, None], inplace=inplace)
    assert got.dtype == torch.bfloat16
    # One rounding of the fp32 result: at most one bf16 step apart.
    torch.testing.assert_close(
        got.float(), want.float(), rtol=2**-7, atol=1e-6)
    # Rotating in bf16 (bf16 tables) would be visibly worse.
    coarse = apply_rope(x, table.bfloat16()[:, None, None])
    assert (coarse.float() - want.float()).abs().max() > \
        (got.float() - want.float()).abs().max()


def test_gradients_equal_formula_and_leave_input_alone():
    angles, table = _angles(2, 3)
    x = torch.randn(6, 2, 32, requires_grad=True)
    # inplace=True is ignored under autograd: x keeps its values.
    before = x.detach().clone()
    apply_rope(x, table[:, None], inplace=True).square().sum().backward()
    assert torch.equal(x.detach(), before)
    want = x.detach().clone().requires_grad_()
    _reference(want, angles[:, None]).square().sum().backward()
    torch.testing.assert_close(
        x.grad.double(), want.grad.double(), rtol=0, atol=1e-5)


def test_identity_rows_rotate_nothing():
    _, table = _angles(2, 2)
    rows = identity_rope(3, table)
    assert rows.shape == (3, 2, 32)
    x = torch.randn(3, 32)
    assert torch.equal(apply_rope(x, rows), x)
    assert torch.equal(
        swap_pairs(torch.arange(4.)), torch.tensor([1., 0, 3, 2]))


def test_bad_tables_are_refused():
    angles, table = _angles(2, 2)
    x = torch.randn(4, 32)
    with pytest.raises(TypeError, match='complex RoPE table'):
        apply_rope(x, torch.complex(angles.cos(), angles.sin()))
    with pytest.raises(ValueError, match=r'\(\.\.\., 2, head_dim\)'):
        apply_rope(x, table[:, 0])
    with pytest.raises(ValueError, match='head_dim'):
        apply_rope(torch.randn(4, 16), table)


def _graph_dtypes(gm):
    """Dtypes of every tensor value and the torch callables in an FX
    graph."""
    dtypes, targets = set(), set()
    for node in gm.graph.nodes:
        for key in ('example_value', 'val'):
            value = node.meta.get(key)
            values = value if isinstance(value, (tuple, list)) else [value]
            dtypes.update(
                v.dtype for v in values if isinstance(v, torch.Tensor))
        targets.add(getattr(node.target, '__name__', str(node.target)))
    return dtypes, targets


def _complex_rope(x, cos, sin):
    """The complex product this module replaced (positive control)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)


def test_compiled_rotation_has_no_complex_op():
    from torch._inductor.compile_fx import compile_fx
    angles, table = _angles(4, 6)
    _, x = _qk_slice(24)
    graphs = []

    def inductor_recording(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    def rotate(x, table):
        return apply_rope(x, table[:, None, None], inplace=True)

    def rotate_complex(x, angles):
        return _complex_rope(x,
                             angles.cos()[:, None, None],
                             angles.sin()[:, None, None])

    torch._dynamo.reset()
    compiled = torch.compile(
        rotate, fullgraph=True, backend=inductor_recording)
    with torch.no_grad():
        got = compiled(x, table)
    torch.testing.assert_close(
        got.double(), _reference(x, angles[:, None, None]), rtol=0, atol=1e-6)
    assert len(graphs) == 1
    dtypes, targets = _graph_dtypes(graphs[0])
    assert dtypes == {torch.float32}, dtypes
    assert not any('complex' in t or 'view_as_real' in t for t in targets)
    # The check sees complex tensors where there are some.
    graphs.clear()
    torch.compile(
        rotate_complex, fullgraph=True, backend=inductor_recording)(x, angles)
    dtypes, targets = _graph_dtypes(graphs[0])
    assert torch.complex64 in dtypes
    assert any('complex' in t for t in targets)


def test_export_of_plain_eva02_has_no_complex_dtype():
    torch.manual_seed(0)
    model = EVA02(
        arch=TINY,
        img_size=64,
        patch_size=16,
        window_size=2,
        global_attn_indexes=(1, ),
        out_indices=(0, 1)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        program = torch.export.export(model, (x, ))
        want = model(x)
        got = program.module()(x)
    dtypes, targets = _graph_dtypes(program.graph_module)
    assert dtypes and not any(d.is_complex for d in dtypes), dtypes
    assert not any('complex' in t or 'view_as_real' in t for t in targets)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
