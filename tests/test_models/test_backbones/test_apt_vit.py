"""APTViT: the no-merge invariant against ViT, prefix tokens in packed
batches, merging."""
import torch
from conftest import ROOT, assert_batch_equals_alone, flat_and_noise_images

from mmapt.models import APTViT, ViT
from mmapt.models.backbones import count_tokens
from mmapt.registry import MODELS

ARCH = dict(embed_dims=48, num_layers=4, num_heads=2)


def _pair(thresholds, **kwargs):
    """A ViT and an APTViT sharing (randomised) weights."""
    torch.manual_seed(0)
    cfg = dict(
        arch=ARCH,
        img_size=224,
        patch_size=14,
        pretrain_img_size=112,
        num_register_tokens=2,
        **kwargs)
    plain = ViT(**cfg).eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    apt = APTViT(thresholds=thresholds, **cfg).eval()
    result = apt.load_state_dict(plain.state_dict(), strict=False)
    return plain, apt, result


def _images(batch=2, height=224, width=336):
    """Normalised images with flat regions (merge) and noise (no merge)."""
    return flat_and_noise_images(batch, height, width, (112, 224))


def test_no_merge_equals_plain_vit():
    """All thresholds -1 -> the ViT's maps at every block: windows of 8
    cells (a multiple of the 112 px patch) and global blocks, class and
    register tokens, non-square input."""
    plain, apt, result = _pair((-1, -1, -1),
                               window_size=8,
                               global_attn_indexes=(1, 3),
                               out_indices=(0, 1, 2, 3))
    assert all(k.startswith('apt_embed.') for k in result.missing_keys)
    assert result.missing_keys and not result.unexpected_keys
    assert apt.tokenizer.patch_sizes == (14, 28, 56, 112)
    assert apt.num_prefix_tokens == 3
    x = _images()
    with torch.no_grad(), count_tokens(apt) as counter:
        want = plain(x)
        got = apt(x)
    assert len(got) == 4
    for a, b in zip(got, want):
        assert a.shape == b.shape == (2, 48, 16, 24)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # Prefix tokens are not counted.
    assert counter.per_image()['tokens'].tolist() == [384, 384]


def test_no_merge_global_attention_without_class_token():
    plain, apt, _ = _pair((-1, -1), use_cls_token=False, out_indices=(3, ))
    x = _images(width=112)
    with torch.no_grad():
        torch.testing.assert_close(apt(x)[0], plain(x)[0], rtol=0, atol=1e-5)


def test_batch_equals_images_alone_when_merging():
    """Prefix tokens never leak across images: with merging (different
    token counts per image), windows and global blocks, a batch of two
    equals the two images run alone."""
    _, apt, _ = _pair((2.0, 2.0, 0.3),
                      window_size=8,
                      global_attn_indexes=(1, ),
                      out_indices=(1, 3))
    x = _images()
    with torch.no_grad(), count_tokens(apt) as counter:
        apt.apt_embed.zero_linear.weight.normal_(0, 0.05)  # not identity
        apt(x)
    tokens = counter.per_image()['tokens'].tolist()
    assert tokens[0] != tokens[1] and max(tokens) < 384
    assert_batch_equals_alone(apt, x)


def test_registry_and_refusals():
    import pytest
    apt = MODELS.build(
        dict(
            type='APTViT',
            arch=ARCH,
            img_size=224,
            window_size=8,
            num_register_tokens=4,
            thresholds=(-1, -1, -1)))
    assert apt.get_layer_depth('backbone.apt_embed.aggregate.weight')[0] == 0
    with pytest.raises(ValueError, match='multiple'):
        apt(torch.zeros(1, 3, 14 * 12, 14 * 16))


def test_benchmark_tool_vit_smoke(monkeypatch, capsys):
    """benchmark_backbone.py --backbone vit: the family's defaults (patch
    sizes 14..112, 16-cell windows) on a small canvas and tiny model."""
    import importlib.util
    import json
    import os
    root = ROOT
    path = os.path.join(root, 'tools', 'analysis', 'benchmark.py')
    spec = importlib.util.spec_from_file_location('benchmark', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    built = []

    def tiny(cls):

        def build(arch, **kwargs):
            built.append(kwargs)
            return cls(arch=ARCH, pretrain_img_size=112, **kwargs)

        return build

    from mmapt.benchmark.backbone_bench import BACKBONES
    monkeypatch.setitem(BACKBONES['vit'], 'classes', (tiny(ViT), tiny(APTViT)))
    tool.main([
        '--backbone-only', '--backbone', 'vit', '--canvas', '448', '--repeat',
        '1', '--num-generated', '1', '--no-memory', '--json'
    ])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result['backbone'] == 'vit' and result['window_size'] == 16
    assert built[0]['patch_size'] == 14 and built[0]['num_register_tokens']
    assert 1.0 < result['token_ratio'] < 64.0
