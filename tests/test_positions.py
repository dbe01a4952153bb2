"""Positions live on the nominal grid (img_size / patch_size): a content
token keeps its position when the canvas padding is dropped."""
import torch

from mmapt.models import EVA02

ARCH = dict(embed_dims=64, num_layers=2, num_heads=1, scale_mlp=True)


def _block_inputs(model, x):
    """(tokens, rope) entering every block of a dense EVA02 forward."""
    seen = []
    handles = [
        block.register_forward_pre_hook(
            lambda mod, args: seen.append((args[0], args[1])))
        for block in model.blocks
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
    model = EVA02(arch=ARCH, img_size=128, patch_size=16, window_size=4,
                  global_attn_indexes=(0, )).eval()
    canvas = torch.randn(1, 3, 128, 128)
    content = canvas[:, :, :80, :112].contiguous()  # 5 x 7 cells kept
    full = _block_inputs(model, canvas)
    cut = _block_inputs(model, content)
    # Block 0 input: patch embedding + absolute position, per cell.
    assert torch.allclose(full[0][0][:, :5, :7], cut[0][0], atol=1e-6)
    # Global RoPE of the content cells = the canvas's tables there.
    rope_full = full[0][1].view(8, 8, -1)[:5, :7].reshape(35, -1)
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
