"""The APT adapter seam: prefix (class) tokens in the packed layout, the
dense EVA02 class token, the tokenizer's no-merge shortcut."""
import copy
import math

import pytest
import torch
from conftest import assert_batch_equals_alone

from mmapt.models import APTEVA02, EVA02
from mmapt.models.apt import APTAdapter, APTBackboneMixin
from mmapt.models.backbones import count_tokens
from mmapt.tokenizer import PatchTokenizer, build_layout

ARCH = dict(embed_dims=64, num_layers=4, num_heads=2, scale_mlp=True)
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def _images(batch=2, height=256, width=192, seed=0):
    """Normalised images with flat regions (merge) and noise (no merge)."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, height, width, generator=gen) * 255
    pixels[0, :, :128, :128] = 200.
    pixels[-1, :, 128:, :] = 30.
    return (pixels - MEAN) / STD


def _randomize(model, seed=0, std=0.02):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


def _pair(thresholds, **kwargs):
    """A class-token EVA02 and APTEVA02 sharing (random) weights."""
    torch.manual_seed(0)
    cfg = dict(
        arch=ARCH, img_size=256, patch_size=16, use_cls_token=True, **kwargs)
    plain = _randomize(EVA02(**cfg)).eval()
    apt = APTEVA02(thresholds=thresholds, **cfg).eval()
    result = apt.load_state_dict(plain.state_dict(), strict=False)
    assert set(result.missing_keys) == {
        f'apt_embed.{n}'
        for n in ('aggregate.weight', 'aggregate.bias', 'zero_linear.weight',
                  'zero_linear.bias')
    }
    return plain, apt


# ------------------------------------------------------------------ layout
def _masks(batch=2, grid=(8, 8)):
    """Scale-1 patch in the top-left corner of image 0, rest base."""
    base = torch.ones(batch, *grid, dtype=torch.bool)
    large = torch.zeros(batch, grid[0] // 2, grid[1] // 2, dtype=torch.bool)
    large[0, 0, 0] = True
    base[0, :2, :2] = False
    return [base, large]


@pytest.mark.parametrize('window', [0, 4])
def test_layout_prefix_groups_and_unpack(window):
    plain = build_layout(_masks(), (8, 8), window)
    layout = build_layout(_masks(), (8, 8), window, num_prefix_tokens=2)
    n0, n1 = 61, 64
    assert layout.tokens_per_image.tolist() == [n0, n1]  # prefix not counted
    assert layout.num_tokens == n0 + n1 and layout.num_packed == n0 + n1 + 4
    assert layout.cu_seqlens_image.tolist() == [0, n0 + 2, n0 + n1 + 4]
    assert layout.prefix_index.tolist() == [0, 1, n0 + 2, n0 + 3]
    assert layout.packed_image_index.tolist() == [0] * (n0 + 2) + \
        [1] * (n1 + 2)
    if not window:
        assert torch.equal(layout.cu_seqlens_window, layout.cu_seqlens_image)
    else:  # per image: its prefix group, then its 4 windows
        sizes = layout.cu_seqlens_window.diff().tolist()
        assert sizes == [2, 13, 16, 16, 16, 2, 16, 16, 16, 16]
    # Content tokens keep their order; prefix rows never reach the maps.
    content = torch.randn(plain.num_tokens, 3)
    packed = torch.full((layout.num_packed, 3), float('nan'))
    packed[layout.content_index] = content
    torch.testing.assert_close(layout.unpack(packed), plain.unpack(content))
    assert layout.keep_ratio.tolist() == plain.keep_ratio.tolist()


def test_tokenizer_shortcut_skips_entropy(monkeypatch):
    """No positive threshold: the plain grid without entropy maps."""
    x = _images()

    def refuse(images, importance=None):
        raise AssertionError('entropy maps computed although no threshold '
                             'can merge')

    for thresholds in ((-1, -1), (0, -1), (0., 0.)):
        tok = PatchTokenizer(
            16, thresholds, window_size=4, num_prefix_tokens=1)
        monkeypatch.setattr(tok, 'score_maps', refuse)
        layout = tok(x)
        assert layout.all_base and layout.num_scales == 3
        assert layout.num_packed == 2 * (16 * 12 + 1)
    tok = PatchTokenizer(16, (5., -1))
    monkeypatch.setattr(tok, 'score_maps', refuse)
    with pytest.raises(AssertionError, match='entropy maps computed'):
        tok(x)


# ------------------------------------------------- dense class-token EVA02
def _rotate(x, angles):
    """EVA-02 RoPE written out from the pair angles: x * cos + rot(x) *
    sin, (x0, x1) -> (-x1, x0), interleaved pairs."""
    cos = angles.cos().repeat_interleave(2, -1)
    sin = angles.sin().repeat_interleave(2, -1)
    rot = torch.stack([-x[..., 1::2], x[..., 0::2]], -1).flatten(-2)
    return x * cos + rot * sin


def _reference_forward(model, images, rope_on_cls=False):
    """The class-token EVA-02 of the released segmentation models, written
    from its description: cls token (+ class position row) first in the
    sequence, RoPE on every other token, global attention, cls dropped.
    ``rope_on_cls``: the mistake to catch (cls rotated like a grid cell)."""
    batch, _, height, width = images.shape
    rows, cols = height // 16, width // 16
    grid = model.patch_embed.proj(images).flatten(2).transpose(1, 2)
    pos = model.pos_embed[:, 1:].reshape(1, 16, 16, -1).permute(0, 3, 1, 2)
    # Positions live on the nominal (img_size) grid, cropped to the input.
    nominal = model.nominal_grid((rows, cols))
    pos = torch.nn.functional.interpolate(
        pos, size=nominal, mode='bicubic', align_corners=False)
    pos = pos[:, :, :rows, :cols]
    grid = grid + pos.flatten(2).transpose(1, 2)
    cls = model.cls_token + model.pos_embed[:, :1]
    x = torch.cat([cls.expand(batch, -1, -1), grid], 1)
    r, c = torch.meshgrid(
        torch.arange(rows).float(), torch.arange(cols).float(), indexing='ij')
    table = model.rope.angles(torch.stack([r, c], -1).reshape(-1, 2), nominal)
    outs = []
    for block in model.blocks:
        attn = block.attn
        y = block.norm1(x)
        bias = torch.cat(
            [attn.q_bias,
             torch.zeros_like(attn.q_bias), attn.v_bias])
        qkv = (y @ attn.qkv.weight.T + bias).reshape(batch, -1, 3,
                                                     attn.num_heads, 32)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, 1 + L, 32)
        cls_q, cls_k = q[:, :, :1], k[:, :, :1]
        if rope_on_cls:
            cls_q, cls_k = (_rotate(t, table[-1:]) for t in (cls_q, cls_k))
        q = torch.cat([cls_q, _rotate(q[:, :, 1:], table)], 2)
        k = torch.cat([cls_k, _rotate(k[:, :, 1:], table)], 2)
        weights = (q @ k.transpose(-1, -2) / math.sqrt(32)).softmax(-1)
        y = (weights @ v).transpose(1, 2).reshape(batch, -1, 64)
        x = x + attn.proj(attn.norm(y))
        x = x + block.mlp(block.norm2(x))
        outs.append(x[:, 1:].transpose(1, 2).reshape(batch, 64, rows, cols))
    return outs


def test_cls_token_eva02_matches_reference():
    torch.manual_seed(0)
    model = _randomize(
        EVA02(
            arch=ARCH,
            img_size=256,
            patch_size=16,
            use_cls_token=True,
            out_indices=(0, 1, 2, 3)),
        std=0.1).eval()
    assert model.cls_token.shape == (1, 1, 64)
    assert model.pos_embed.shape == (1, 1 + 16 * 16, 64)
    x = _images(width=128)
    with torch.no_grad():
        got = model(x)
        want = _reference_forward(model, x)
        wrong = _reference_forward(model, x, rope_on_cls=True)
        model.cls_token.normal_(std=3.)
        other_cls = model(x)
    for a, b in zip(got, want):
        assert a.shape == (2, 64, 16, 8)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # The test can tell: RoPE on the class token, or another class token,
    # give other maps.
    assert (wrong[3] - want[3]).abs().max() > 1e-3
    assert (other_cls[3] - got[3]).abs().max() > 1e-3


def test_cls_token_checkpointing_freezing_and_table_resize():
    model = EVA02(
        arch=ARCH,
        img_size=128,
        patch_size=16,
        use_cls_token=True,
        window_size=4,
        global_attn_indexes=(1, ),
        with_cp=True,
        drop_path_rate=0.2,
        out_indices=(3, ))
    model.train()
    model(_images(height=128, width=128))[0].square().mean().backward()
    assert model.cls_token.grad is not None and model.cls_token.grad.any()
    frozen = EVA02(
        arch=ARCH, img_size=128, use_cls_token=True, frozen_stages=1)
    assert not frozen.cls_token.requires_grad
    # A (1, 1 + 8 * 8, C) table with its class row: resized grid, row kept.
    table = torch.randn(1, 1 + 64, 64)
    state = dict(frozen.state_dict(), pos_embed=table)
    frozen.load_state_dict(state)
    torch.testing.assert_close(frozen.pos_embed[:, :1], table[:, :1])
    assert frozen.pos_embed.shape == (1, 1 + 16 * 16, 64)
    # A table without a class row (a plain EVA02 checkpoint): row kept.
    row = frozen.pos_embed[:, :1].detach().clone()
    frozen.load_state_dict(dict(state, pos_embed=torch.randn(1, 64, 64)))
    torch.testing.assert_close(frozen.pos_embed[:, :1], row)
    with pytest.raises(ValueError, match='num_prefix_tokens'):
        PatchTokenizer(16, (2, ), num_prefix_tokens=-1)


# ------------------------------------------- prefix tokens in APT (packed)
@pytest.mark.parametrize('window', [0, 4])
def test_apt_no_merge_equals_dense_with_cls_token(window):
    plain, apt = _pair((-1, -1),
                       window_size=window,
                       global_attn_indexes=(1, 3),
                       out_indices=(0, 1, 2, 3))
    x = _images()
    with torch.no_grad(), count_tokens(apt) as apt_counter, \
            count_tokens(plain) as plain_counter:
        want, got = plain(x), apt(x)
    for a, b in zip(got, want):
        assert a.shape == (2, 64, 16, 12)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # Token counts leave the class token out.
    for counter in (apt_counter, plain_counter):
        stats = counter.per_image()
        assert stats['tokens'].tolist() == [192, 192]
        assert stats['baseline_tokens'].tolist() == [192, 192]


def test_prefix_tokens_never_leak_across_images():
    """Merging, windows and global blocks, a class token: each image of a
    batch of two equals that image run alone."""
    _, apt = _pair((5.0, 5.0),
                   window_size=4,
                   global_attn_indexes=(1, ),
                   out_indices=(1, 3))
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    x = _images()
    tokens = apt.tokenize(x).tokens_per_image
    assert tokens[0] < 192 and tokens[1] < 192
    assert_batch_equals_alone(apt, x)


def test_packed_class_token_sits_first_without_rope():
    _, apt = _pair((5.0, 5.0), window_size=4, global_attn_indexes=(1, ))
    x = _images()
    with torch.no_grad():
        layout = apt.tokenize(x)
        tokens = apt.embed(x, layout)
        ctx = apt.packed_context(layout)
    starts = layout.cu_seqlens_image[:-1].long()
    assert torch.equal(layout.prefix_index, starts)
    want = (apt.cls_token + apt.pos_embed[:, :1])[0, 0]
    for start in starts.tolist():
        torch.testing.assert_close(tokens[start], want)
        for rope in (ctx.image.rope, ctx.window.rope):  # cos 1, sin 0
            assert bool((rope[start, 0] == 1).all())
            assert not rope[start, 1:].any()
    assert ctx.packed_image_index.numel() == layout.num_packed


def test_adapter_is_the_only_apt_code_in_the_backbone():
    """APTEVA02 is the mixin plus EVA02: no method of its own."""
    assert APTEVA02.__mro__[1:3] == (APTBackboneMixin, EVA02)
    own = {k for k, v in vars(APTEVA02).items() if callable(v)}
    assert not own
    model = APTEVA02(arch=ARCH, img_size=256, thresholds=(2, 2))
    assert isinstance(model.apt, APTAdapter)
    assert model.tokenizer is model.apt.tokenizer
    assert model.apt_param_prefixes == ('apt_embed.', )


def test_deepcopy_keeps_the_adapter_on_its_own_host():
    """EMA hooks deep-copy the model: the copy's adapter must drive the
    copy's weights, not the original's."""
    model = APTEVA02(
        arch=ARCH, img_size=128, thresholds=(2, 2), out_indices=(3, )).eval()
    twin = copy.deepcopy(model)
    assert twin.apt.host is twin and twin.apt is not model.apt
    x = _images(height=128, width=128)
    with torch.no_grad():
        twin.blocks[3].mlp.w3.bias.add_(1.)
        assert not torch.allclose(twin(x)[0], model(x)[0])
