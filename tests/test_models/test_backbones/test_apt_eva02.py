"""APTEVA02: the no-merge invariant, the APT embedding, packing, errors."""
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, assert_batch_equals_alone, flat_and_noise_images

from mmapt.models import APTEVA02, EVA02
from mmapt.models.backbones import count_tokens
from mmapt.registry import MODELS

ARCH = dict(embed_dims=64, num_layers=4, num_heads=1, scale_mlp=True)
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)


def _pair(thresholds, **kwargs):
    """An EVA02 and an APTEVA02 sharing weights."""
    torch.manual_seed(0)
    cfg = dict(arch=ARCH, img_size=256, patch_size=16, **kwargs)
    plain = EVA02(**cfg).eval()
    apt = APTEVA02(thresholds=thresholds, **cfg).eval()
    result = apt.load_state_dict(plain.state_dict(), strict=False)
    return plain, apt, result


def _images(batch=2, height=256, width=192, seed=0):
    """Normalised images with flat regions (merge) and noise (no merge)."""
    return flat_and_noise_images(batch, height, width, (128, 128), seed)


def test_no_merge_equals_plain_eva02():
    """THE invariant: all thresholds -1 -> same maps as EVA02, every block,
    window + global blocks, non-square input."""
    plain, apt, result = _pair((-1, -1),
                               window_size=4,
                               global_attn_indexes=(1, 3),
                               out_indices=(0, 1, 2, 3))
    assert set(result.missing_keys) == {
        'apt_embed.aggregate.weight', 'apt_embed.aggregate.bias',
        'apt_embed.zero_linear.weight', 'apt_embed.zero_linear.bias'
    }
    assert not result.unexpected_keys
    x = _images()
    with torch.no_grad(), count_tokens(apt) as counter:
        want = plain(x)
        got = apt(x)
    assert len(got) == 4
    for a, b in zip(got, want):
        assert a.shape == b.shape == (2, 64, 16, 12)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    stats = counter.per_image()
    assert stats['tokens'].tolist() == [192, 192]
    assert stats['baseline_tokens'].tolist() == [192, 192]
    assert stats['keep_ratio'].tolist() == [1.0, 1.0]


def test_no_merge_global_attention_four_scales():
    """Global attention only, patch sizes 16..128, 256 x 128 input."""
    plain, apt, _ = _pair((-1, -1, -1), out_indices=(1, 3))
    x = _images(width=128)
    with torch.no_grad():
        for a, b in zip(apt(x), plain(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_no_merge_through_the_entropy_tokenizer():
    """Positive thresholds that nothing passes (noise images): the real
    tokenizer path, still equal to the plain model."""
    plain, apt, _ = _pair((1e-6, 1e-6), window_size=4, out_indices=(3, ))
    gen = torch.Generator().manual_seed(1)
    x = ((torch.rand(1, 3, 128, 192, generator=gen) * 255) - MEAN) / STD
    with torch.no_grad(), count_tokens(apt) as counter:
        got, want = apt(x)[0], plain(x)[0]
    assert counter.per_image()['keep_ratio'].tolist() == [1.0]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_large_patch_embedding_at_init():
    """Zero-init linear: merged token = embed(resized pixels) + pooled pos."""
    _, apt, _ = _pair((5.0, 5.0), window_size=4, out_indices=(0, ))
    x = _images()
    with torch.no_grad():
        layout = apt.tokenize(x)
        tokens = apt.embed(x, layout)
        pos = apt.position_map(layout.grid_size)[0]  # (C, Hc, Wc)
    large = (layout.scale_index > 0).nonzero().flatten()
    assert large.numel() > 0 and (layout.scale_index == 2).any()
    for t in large.tolist()[:20] + large.tolist()[-20:]:
        b, r, c = (
            int(v[t]) for v in (layout.image_index, layout.row, layout.col))
        side = int(layout.side[t])
        pixels = x[b:b + 1, :, r * 16:(r + side) * 16, c * 16:(c + side) * 16]
        resized = F.interpolate(pixels, size=(16, 16), mode='area')
        want = apt.patch_embed.proj(resized).flatten() + \
            pos[:, r:r + side, c:c + side].mean((1, 2))
        torch.testing.assert_close(tokens[t], want, rtol=1e-5, atol=1e-5)
    base = (layout.scale_index == 0).nonzero().flatten()[:5]
    for t in base.tolist():
        b, r, c = (
            int(v[t]) for v in (layout.image_index, layout.row, layout.col))
        pixels = x[b:b + 1, :, r * 16:r * 16 + 16, c * 16:c * 16 + 16]
        want = apt.patch_embed.proj(pixels).flatten() + pos[:, r, c]
        torch.testing.assert_close(tokens[t], want, rtol=1e-5, atol=1e-5)


def test_aggregation_is_the_shared_conv_applied_i_times():
    """Trained-looking APT layers: merged token = resized embed +
    ZeroLinear(Conv(Conv(...(base cells)))) + pooled pos, Conv a real
    nn.Conv2d applied to the token's block of base embeddings."""
    _, apt, _ = _pair((5.0, 5.0), window_size=4, out_indices=(0, ))
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.1)
        apt.apt_embed.zero_linear.bias.normal_(std=0.1)
        apt.apt_embed.aggregate.bias.normal_(std=0.1)
    x = _images()
    flat = (torch.full((3, 1, 1), 90.) - MEAN[0]) / STD[0]
    x[1, :, 32:64, 96:128] = flat  # one 32-px patch (scale 1)
    x[1, :, 64:96, 32:64] = flat
    with torch.no_grad():
        layout = apt.tokenize(x)
        tokens = apt.embed(x, layout)
        base = apt.patch_embed.proj(x)  # (B, C, Hc, Wc) via the real conv
        pos = apt.position_map(layout.grid_size)[0]
        for scale in (1, 2):
            index = (layout.scale_index == scale).nonzero().flatten()
            assert index.numel() > 0
            for t in index.tolist()[:6]:
                b, r, c = (
                    int(v[t])
                    for v in (layout.image_index, layout.row, layout.col))
                side = 1 << scale
                cells = base[b:b + 1, :, r:r + side, c:c + side]
                for _ in range(scale):
                    cells = apt.apt_embed.aggregate(cells)
                pixels = x[b:b + 1, :, r * 16:(r + side) * 16,
                           c * 16:(c + side) * 16]
                want = apt.patch_embed.proj(
                    F.interpolate(pixels, size=(16, 16), mode='area'))
                want = want.flatten() + apt.apt_embed.zero_linear(
                    cells.flatten()) + pos[:, r:r + side, c:c + side].mean(
                        (1, 2))
                torch.testing.assert_close(
                    tokens[t], want, rtol=1e-5, atol=1e-5)


def test_apt_layers_receive_gradients():
    _, apt, _ = _pair((5.0, 5.0), window_size=4, out_indices=(3, ))
    apt.train()
    apt(_images())[0].square().mean().backward()
    conv, linear = apt.apt_embed.aggregate, apt.apt_embed.zero_linear
    assert conv.weight.grad is not None and conv.bias.grad is not None
    assert linear.weight.grad is not None
    assert linear.weight.grad.abs().sum() > 0
    assert linear.bias.grad.abs().sum() > 0
    # After one step the conv path is live: its gradient becomes non-zero.
    with torch.no_grad():
        linear.weight.add_(torch.randn_like(linear.weight) * 0.01)
    apt.zero_grad()
    apt(_images())[0].square().mean().backward()
    assert conv.weight.grad.abs().sum() > 0


def test_apt_layers_get_gradients_without_merging():
    """No token merged: the APT layers still get (zero) gradients, so DDP
    needs no find_unused_parameters."""
    _, apt, _ = _pair((-1, -1), out_indices=(0, ))
    apt.train()
    apt(_images())[0].sum().backward()
    for param in apt.apt_embed.parameters():
        assert param.grad is not None and not param.grad.any()


def test_merging_packs_images_independently():
    """With merging, each image's maps equal that image run alone."""
    _, apt, _ = _pair((5.0, 5.0),
                      window_size=4,
                      global_attn_indexes=(1, ),
                      out_indices=(1, 3))
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    x = _images()
    with torch.no_grad():
        with count_tokens(apt) as counter:
            apt(x)
    stats = counter.per_image()
    tokens = stats['tokens'].tolist()
    assert tokens[0] < 192 and tokens[1] < 192
    assert stats['keep_ratio'].tolist() == [n / 192 for n in tokens]
    assert_batch_equals_alone(apt, x)


def test_merged_token_is_repeated_over_its_cells():
    _, apt, _ = _pair((5.0, 5.0), out_indices=(3, ))
    x = _images()
    with torch.no_grad():
        out = apt(x)[0]
    # The flat 128 x 128 corner of image 0 is one 64-px token per 4x4 cells.
    corner = out[0, :, :4, :4].flatten(1)
    assert torch.allclose(corner, corner[:, :1].expand_as(corner))
    assert not torch.allclose(out[0, :, 12:, 8:].flatten(1)[:, 0],
                              out[0, :, 12:, 8:].flatten(1)[:, 1])


def test_rope_uses_token_centres():
    _, apt, _ = _pair((5.0, 5.0), window_size=4, out_indices=(0, ))
    x = _images()
    layout = apt.tokenize(x)
    ctx = apt.packed_context(layout)
    t = int((layout.scale_index == 2).nonzero()[0])
    r, c = float(layout.row[t]) + 1.5, float(layout.col[t]) + 1.5
    # Global positions live on the nominal grid (img_size 256: 16 x 16
    # cells), not on this 16 x 12 input.
    table = apt.rope(torch.tensor([[r, c]]), (16, 16))
    assert apt.nominal_grid(layout.grid_size) == (16, 16)
    assert torch.equal(ctx.image.rope[t], table[0])
    wr, wc = r % 4, c % 4
    table = apt.rope(torch.tensor([[wr, wc]]), (4, 4))
    assert torch.equal(ctx.window.rope[t], table[0])


def test_registry_and_input_errors():
    model = MODELS.build(
        dict(
            type='APTEVA02',
            arch=ARCH,
            img_size=256,
            window_size=8,
            thresholds=(2, 2)))
    assert isinstance(model, APTEVA02)
    with pytest.raises(ValueError, match='multiple of the largest patch'):
        APTEVA02(arch=ARCH, img_size=256, window_size=6, thresholds=(2, 2))
    with pytest.raises(ValueError, match='pad_size_divisor'):
        model(torch.randn(1, 3, 256, 160))  # 10 cells: not a multiple of 8
    with pytest.raises(ValueError, match='thresholds'):
        APTEVA02(arch=ARCH, img_size=256, thresholds=(float('nan'), 1))
    assert model.get_layer_depth('backbone.apt_embed.zero_linear.weight') \
        == (0, ARCH['num_layers'] + 2)


def test_frozen_stage_zero_freezes_apt_embedding():
    model = APTEVA02(
        arch=ARCH, img_size=256, thresholds=(2, ), frozen_stages=0)
    model.train()
    assert not any(p.requires_grad for p in model.apt_embed.parameters())
    assert all(p.requires_grad for p in model.blocks[0].parameters())


def test_benchmark_tool_smoke(monkeypatch, capsys):
    """benchmark.py --backbone-only end to end on a tiny setting."""
    import importlib.util
    import json
    import os
    root = ROOT
    path = os.path.join(root, 'tools', 'analysis', 'benchmark.py')
    spec = importlib.util.spec_from_file_location('benchmark', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tiny = dict(embed_dims=64, num_layers=2, num_heads=1)
    from mmapt.benchmark.backbone_bench import BACKBONES
    monkeypatch.setitem(BACKBONES['eva02'], 'classes',
                        (lambda arch, **kw: EVA02(arch=tiny, **kw),
                         lambda arch, **kw: APTEVA02(arch=tiny, **kw)))
    tool.main([
        '--backbone-only', '--canvas', '256', '--patch-sizes', '16', '32',
        '64', '--thresholds', '2', '2', '--window-size', '8',
        '--global-attn-indexes', '1', '--repeat', '1', '--num-generated', '2',
        '--no-memory', '--json'
    ])
    assert torch.is_grad_enabled()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result['images'] == 2
    assert result['speedup'] == pytest.approx(
        result['baseline_ms'] / result['apt_ms'], rel=1e-3)
    assert 1.0 <= result['token_ratio'] < 4.0
    assert set(
        result['overhead_ms']) >= {'tokenizer_ms', 'embed_ms', 'unpack_ms'}
