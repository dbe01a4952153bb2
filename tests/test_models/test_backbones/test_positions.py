"""Positions live on the nominal grid (img_size / patch_size): a content
token keeps its position when the canvas padding is dropped."""
import torch

from mmapt.models import APTEVA02, EVA02

ARCH = dict(embed_dims=64, num_layers=2, num_heads=1, scale_mlp=True)


def _block_inputs(model, x):
    """(tokens (B, H, W, C), rope table) entering every block of a dense
    EVA02 forward."""
    seen = []

    def record(block, args):
        tokens, ctx = args
        rope = ctx.window_rope if block.window_size else ctx.image_rope
        seen.append((tokens.unflatten(1, ctx.grid), rope))

    handles = [
        block.register_forward_pre_hook(record) for block in model.blocks
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_plain_positions_are_cropped_not_stretched():
    torch.manual_seed(0)
    # Nominal grid 8 x 8 (128 px / 16); block 0 global, block 1 window 4.
    model = EVA02(
        arch=ARCH,
        img_size=128,
        patch_size=16,
        window_size=4,
        global_attn_indexes=(0, )).eval()
    canvas = torch.randn(1, 3, 128, 128)
    content = canvas[:, :, :80, :112].contiguous()  # 5 x 7 cells kept
    full = _block_inputs(model, canvas)
    cut = _block_inputs(model, content)
    # Block 0 input: patch embedding + absolute position, per cell.
    assert torch.allclose(full[0][0][:, :5, :7], cut[0][0], atol=1e-6)
    # Global RoPE of the content cells = the canvas's tables there.
    rope_full = full[0][1].unflatten(0, (8, 8))[:5, :7].flatten(0, 1)
    assert torch.equal(rope_full, cut[0][1])
    # Window RoPE is window-relative: the same table either way.
    assert torch.equal(full[1][1], cut[1][1])
    # The old behaviour (positions stretched to the 5 x 7 grid) differs.
    stretched = model.rope.grid(5, 7, canvas.device)
    assert not torch.allclose(stretched, cut[0][1])


def test_nominal_grid_grows_with_larger_inputs():
    model = EVA02(arch=ARCH, img_size=64, patch_size=16)
    assert model.nominal_grid((2, 3)) == (4, 4)
    assert model.nominal_grid((6, 3)) == (6, 4)
    # Larger than nominal on an axis: the table is resampled to the input.
    assert model.position_map((6, 3)).shape == (1, 64, 6, 3)


def _apt_pair(thresholds, **kwargs):
    torch.manual_seed(0)
    cfg = dict(arch=ARCH, img_size=256, patch_size=16, **kwargs)
    plain = EVA02(**cfg).eval()
    apt = APTEVA02(thresholds=thresholds, **cfg).eval()
    apt.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    return plain, apt


def _normalised(pixels):
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _apt_tokens(apt, x):
    """{(row, col, side): (embedding, global RoPE, window RoPE)}."""
    with torch.no_grad():
        layout = apt.tokenize(x)
        tokens = apt.embed(x, layout)
        ctx = apt.packed_context(layout)
    keys = zip(layout.row.tolist(), layout.col.tolist(), layout.side.tolist())
    return {
        key: (tokens[i], ctx.image.rope[i], ctx.window.rope[i])
        for i, key in enumerate(keys)
    }


def test_apt_positions_unchanged_when_padding_is_dropped():
    # 16 x 16-cell canvas, windows of 8 cells, patches up to 64 px; the
    # content is the top 128 x 192 px (8 x 12 cells), the rest padding.
    _, apt = _apt_pair((2, 2), window_size=8, global_attn_indexes=(1, ))
    gen = torch.Generator().manual_seed(0)
    pixels = torch.full((1, 3, 256, 256), 114.)
    pixels[:, :, :128, :192] = torch.rand(1, 3, 128, 192, generator=gen) * 255
    pixels[:, :, :64, :64] = 200.  # a flat corner: merged patches
    canvas = _normalised(pixels)
    content = canvas[:, :, :128, :192].contiguous()
    full, cut = _apt_tokens(apt, canvas), _apt_tokens(apt, content)
    assert any(side > 1 for _, _, side in cut)  # merged tokens are checked
    assert len(cut) < len(full)  # the padding's tokens are gone
    for key, (emb, rope_g, rope_w) in cut.items():
        ref = full[key]  # the same patch exists on the canvas
        assert torch.allclose(emb, ref[0], atol=1e-5), key
        assert torch.allclose(rope_g, ref[1]), key
        assert torch.allclose(rope_w, ref[2]), key


def test_padding_free_no_merge_equals_plain_with_partial_windows():
    """Inputs a multiple of the largest patch but not of the window: APT's
    partial (shorter) window groups give what the dense model gives with
    its padded and masked windows."""
    plain, apt = _apt_pair((-1, -1),
                           window_size=8,
                           global_attn_indexes=(1, ),
                           out_indices=(0, 1))
    x = torch.randn(2, 3, 128, 192)  # 8 x 12 cells: windows 8 x 8 and 8 x 4
    with torch.no_grad():
        for a, b in zip(plain(x), apt(x)):
            assert torch.allclose(a, b, atol=1e-5)
