"""EVA-02 checkpoint conversion: timm and official layouts, CLI, refusals."""
import importlib.util
import logging
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from mmapt.converters import ConversionError, convert_eva02_state_dict
from mmapt.models import EVA02
from mmapt.models.layers import resize_patch_kernel

REPO = ROOT
ARCH = dict(
    embed_dims=64,
    num_layers=2,
    num_heads=1,
    scale_mlp=True,
    attn_inner_norm=True)


def _model(**kwargs):
    torch.manual_seed(0)
    model = EVA02(
        arch=ARCH,
        img_size=112,
        patch_size=14,
        pretrain_img_size=112,
        **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _to_official(state, fused):
    """Our state dict -> an official BAAI EVA-02 checkpoint (synthetic)."""
    out = {
        'cls_token': torch.zeros(1, 1, 64),
        'mask_token': torch.zeros(1, 1, 64),
        'lm_head.weight': torch.zeros(10, 64),
        'lm_head.bias': torch.zeros(10),
        'norm.weight': torch.ones(64),
        'norm.bias': torch.zeros(64),
        'rope.freqs_cos': torch.zeros(64, 64),
        # The official table has a class-token row first.
        'pos_embed': torch.cat([torch.randn(1, 1, 64), state['pos_embed']], 1),
        'patch_embed.proj.weight': state['patch_embed.proj.weight'],
        'patch_embed.proj.bias': state['patch_embed.proj.bias'],
    }
    for i in range(ARCH['num_layers']):
        src = {
            k[len(f'blocks.{i}.'):]: v
            for k, v in state.items() if k.startswith(f'blocks.{i}.')
        }
        blk = {
            'norm1.weight': src['norm1.weight'],
            'norm1.bias': src['norm1.bias'],
            'norm2.weight': src['norm2.weight'],
            'norm2.bias': src['norm2.bias'],
            'attn.q_bias': src['attn.q_bias'],
            'attn.v_bias': src['attn.v_bias'],
            'attn.inner_attn_ln.weight': src['attn.norm.weight'],
            'attn.inner_attn_ln.bias': src['attn.norm.bias'],
            'attn.proj.weight': src['attn.proj.weight'],
            'attn.proj.bias': src['attn.proj.bias'],
            'attn.rope.freqs_cos': torch.zeros(64, 32),
            'attn.rope.freqs_sin': torch.zeros(64, 32),
            'mlp.ffn_ln.weight': src['mlp.norm.weight'],
            'mlp.ffn_ln.bias': src['mlp.norm.bias'],
            'mlp.w3.weight': src['mlp.w3.weight'],
            'mlp.w3.bias': src['mlp.w3.bias'],
        }
        if fused:
            blk['attn.qkv.weight'] = src['attn.qkv.weight']
            blk['mlp.w12.weight'] = src['mlp.w12.weight']
            blk['mlp.w12.bias'] = src['mlp.w12.bias']
        else:
            q, k, v = src['attn.qkv.weight'].chunk(3)
            blk.update({
                'attn.q_proj.weight': q,
                'attn.k_proj.weight': k,
                'attn.v_proj.weight': v
            })
            for suffix in ('weight', 'bias'):
                w1, w2 = src[f'mlp.w12.{suffix}'].chunk(2)
                blk[f'mlp.w1.{suffix}'] = w1
                blk[f'mlp.w2.{suffix}'] = w2
        out.update({f'blocks.{i}.{k}': v for k, v in blk.items()})
    return {'module': out}


@pytest.mark.parametrize('fused', [True, False])
def test_official_round_trip(fused):
    model = _model()
    state = model.state_dict()
    converted, dropped = convert_eva02_state_dict(_to_official(state, fused))
    assert set(converted) == set(state)
    for key, value in state.items():
        assert torch.equal(converted[key], value), key
    reasons = ' '.join(dropped)
    for key in ('cls_token', 'mask_token', 'lm_head.weight', 'rope.freqs_cos',
                'blocks.0.attn.rope.freqs_cos', 'pos_embed[:, 0]'):
        assert key in reasons
    EVA02(
        arch=ARCH, img_size=112, patch_size=14,
        pretrain_img_size=112).load_state_dict(converted)


def test_timm_round_trip():
    timm = pytest.importorskip('timm')
    from timm.models.eva import Eva
    ref = Eva(
        img_size=112,
        patch_size=14,
        embed_dim=64,
        depth=2,
        num_heads=1,
        qkv_fused=True,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(8, 8),
        num_classes=5)
    assert timm.__version__
    converted, dropped = convert_eva02_state_dict(
        {'state_dict': ref.state_dict()})
    assert any('cls_token' in d for d in dropped)
    assert any('head.weight' in d for d in dropped)
    assert converted['pos_embed'].shape == (1, 64, 64)
    assert torch.equal(converted['pos_embed'], ref.pos_embed[:, 1:])
    assert torch.equal(converted['blocks.1.mlp.w12.weight'],
                       ref.blocks[1].mlp.fc1.weight)
    model = EVA02(
        arch=dict(embed_dims=64, num_layers=2, num_heads=1),
        img_size=112,
        patch_size=14,
        pretrain_img_size=112)
    model.load_state_dict(converted)


def test_wrong_dicts_are_refused():
    with pytest.raises(ConversionError, match='expected an EVA-02'):
        convert_eva02_state_dict({'conv1.weight': torch.zeros(1)})
    with pytest.raises(ConversionError, match='expected an EVA-02'):
        convert_eva02_state_dict({})
    state = _to_official(_model().state_dict(), True)
    state['module']['blocks.0.gamma_1'] = torch.ones(64)  # layer scale
    with pytest.raises(ConversionError, match='blocks.0.gamma_1'):
        convert_eva02_state_dict(state)
    state = _to_official(_model().state_dict(), True)
    del state['module']['blocks.1.mlp.w12.weight']
    with pytest.raises(ConversionError, match='SwiGLU'):
        convert_eva02_state_dict(state)


def test_pinv_kernel_resize_preserves_responses():
    torch.manual_seed(0)
    kernel = torch.randn(4, 3, 14, 14)
    new = resize_patch_kernel(kernel, 16, mode='pinv')
    patch = torch.randn(2, 3, 14, 14)
    big = F.interpolate(
        patch, size=(16, 16), mode='bicubic', align_corners=False)
    want = torch.einsum('bchw,ochw->bo', patch, kernel)
    got = torch.einsum('bchw,ochw->bo', big, new)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert resize_patch_kernel(kernel, 16).shape == (4, 3, 16, 16)


def _run_tool(monkeypatch, capsys, *argv):
    """Run tools/model_converters/eva02_to_mmapt.py in-process."""
    path = os.path.join(REPO, 'tools', 'model_converters', 'eva02_to_mmapt.py')
    spec = importlib.util.spec_from_file_location('eva02_to_mmapt', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, 'argv', ['eva02_to_mmapt.py', *argv])
    code = tool.main()
    return code, capsys.readouterr()


def test_cli_patch_and_img_size(tmp_path, monkeypatch, capsys):
    src, dst = str(tmp_path / 'official.pt'), str(tmp_path / 'mmapt.pth')
    torch.save(_to_official(_model().state_dict(), False), src)
    code, out = _run_tool(monkeypatch, capsys, src, dst, '--patch-size', '16',
                          '--img-size', '256')
    assert code == 0, out.err
    assert 'dropped mask_token' in out.out
    state = torch.load(dst, map_location='cpu')['state_dict']
    assert state['patch_embed.proj.weight'].shape[-1] == 16
    assert state['pos_embed'].shape == (1, 256, 64)  # 16 x 16 grid
    model = EVA02(
        arch=ARCH,
        img_size=256,
        patch_size=16,
        pretrain_img_size=256,
        pretrain_patch_size=16)
    model.load_state_dict(state)
    assert model(torch.randn(1, 3, 64, 48))[0].shape == (1, 64, 4, 3)

    torch.save({'model': {'fc.weight': torch.zeros(2)}}, src)
    code, out = _run_tool(monkeypatch, capsys, src, dst)
    assert code == 1 and 'expected an EVA-02' in out.err


def test_init_cfg_pretrained_loads_converted_checkpoint(tmp_path):
    """mmengine's Pretrained init: converted official weights load into
    EVA02 and APTEVA02 (only the APT layers missing), pos table resampled."""
    from mmengine.logging import MMLogger

    from mmapt.models import APTEVA02
    src = _model()
    converted, _ = convert_eva02_state_dict(
        _to_official(src.state_dict(), False), patch_size=16)
    path = str(tmp_path / 'converted.pth')
    torch.save({'state_dict': converted}, path)
    cfg = dict(
        arch=ARCH,
        img_size=128,
        patch_size=16,
        pretrain_img_size=224,
        init_cfg=dict(type='Pretrained', checkpoint=path))
    plain = EVA02(**cfg)
    plain.init_weights()
    # 8 x 8 table resampled to the 16 x 16 pretraining grid on load.
    assert plain.pos_embed.shape == (1, 256, 64)
    assert torch.equal(plain.blocks[1].mlp.w12.weight,
                       src.blocks[1].mlp.w12.weight)
    apt = APTEVA02(thresholds=(2, 2), **cfg)
    logger = MMLogger.get_current_instance()
    messages = []

    class Collect(logging.Handler):

        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect()
    logger.addHandler(handler)
    try:
        apt.init_weights()
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(messages)
    assert 'apt_embed.zero_linear.weight' in text
    missing_line = [m for m in messages if 'missing keys' in m]
    assert missing_line and all(
        'blocks.' not in line and 'pos_embed' not in line
        for line in missing_line)
    assert torch.equal(apt.blocks[0].attn.qkv.weight,
                       plain.blocks[0].attn.qkv.weight)
    assert not apt.apt_embed.zero_linear.weight.any()
