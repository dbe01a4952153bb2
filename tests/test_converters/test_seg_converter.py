"""Released EVA-02 UperNet segmentors -> mmapt: keys, values, forward.

Synthetic checkpoints are written from the released layout (mmseg 0.x
``{'meta', 'state_dict', ...}``, EVA-02's key names and shapes, RoPE tables
from EVA-02's formula), converted with ``convert_eva02_seg_checkpoint`` and
loaded strictly into the shipped configs:

* at full size on the ``meta`` device (shapes only, no memory): B-512,
  L-512 and L-640 into their configs and APT versions;
* with a small architecture and real values: every tensor lands where it
  should, and the converted segmentor's features equal a reference forward
  of the released model written here from its definition (class token
  first, no RoPE on it, position table added as stored, fpn1..fpn4).
"""
import contextlib
import copy
import importlib.util
import json
import os.path as osp
import re
import shutil
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip('mmseg')

from conftest import ROOT, TESTS_DIR
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmapt  # noqa: F401
from mmapt.converters import (ConversionError, config_for,
                              convert_eva02_seg_checkpoint)

FIXTURES = osp.join(TESTS_DIR, 'fixtures')
NUM_CLASSES = 150
BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var',
           'num_batches_tracked')

# config -> (embed dims, depth, heads, grid, UPerHead channels, aux channels)
RELEASED = {
    'configs/eva02_upernet_ade20k.py': (768, 12, 12, 32, 768, 256),
    'configs/eva02_upernet_ade20k_large_512.py': (1024, 24, 16, 32, 1024, 256),
    'configs/eva02_upernet_ade20k_large_640.py':
    (1024, 24, 16, 40, 1536, 1536),
}


def _apt_path(path: str) -> str:
    return path.replace('eva02_upernet', 'apt_upernet')


# ------------------------------------------------- the released layout
def eva02_rope(grid: int, head_dim: int, pt_grid: int = 16):
    """EVA-02's ``VisionRotaryEmbeddingFast`` tables, (grid*grid, head_dim):
    dim = head_dim / 2 per axis, t = arange(grid) / grid * pt_grid, each
    frequency repeated twice, rows then columns."""
    dim = head_dim // 2
    freqs = 1. / (10000**(torch.arange(0, dim, 2)[:dim // 2].float() / dim))
    t = torch.arange(grid).float() / grid * pt_grid
    axis = torch.einsum('i,f->if', t, freqs).repeat_interleave(2, -1)
    both = torch.cat([
        axis[:, None, :].expand(grid, grid, dim), axis[None, :, :].expand(
            grid, grid, dim)
    ], -1)
    return both.cos().reshape(-1, head_dim), both.sin().reshape(-1, head_dim)


def released_state(dims,
                   depth,
                   heads,
                   grid,
                   channels,
                   aux,
                   device='cpu',
                   seed=0,
                   pt_grid=16):
    """A state dict with the keys and shapes of a released segmentor."""
    gen = torch.Generator().manual_seed(seed)
    meta = device == 'meta'

    def rand(*shape, scale=0.05, offset=0.):
        if meta:
            return torch.empty(shape, device='meta')
        return torch.randn(shape, generator=gen) * scale + offset

    def bn(prefix, n):
        return {
            f'{prefix}.weight':
            rand(n, offset=1.),
            f'{prefix}.bias':
            rand(n),
            f'{prefix}.running_mean':
            rand(n),
            f'{prefix}.running_var':
            rand(n, scale=0.1, offset=1.).abs() if not meta else rand(n),
            f'{prefix}.num_batches_tracked':
            torch.empty((), dtype=torch.long, device='meta')
            if meta else torch.tensor(1000),
        }

    hidden = int(dims * 4 * 2 / 3)
    head_dim = dims // heads
    if meta:
        cos = sin = torch.empty(grid * grid, head_dim, device='meta')
    else:
        cos, sin = eva02_rope(grid, head_dim, pt_grid)
    sd = OrderedDict()
    sd['backbone.cls_token'] = rand(1, 1, dims, scale=0.5)
    sd['backbone.pos_embed'] = rand(1, 1 + grid * grid, dims, scale=0.5)
    sd['backbone.patch_embed.proj.weight'] = rand(dims, 3, 16, 16, scale=0.02)
    sd['backbone.patch_embed.proj.bias'] = rand(dims)
    sd['backbone.rope.freqs_cos'] = cos
    sd['backbone.rope.freqs_sin'] = sin
    for i in range(depth):
        p = f'backbone.blocks.{i}.'
        sd[p + 'norm1.weight'] = rand(dims, offset=1.)
        sd[p + 'norm1.bias'] = rand(dims)
        sd[p + 'attn.q_bias'] = rand(dims)
        sd[p + 'attn.v_bias'] = rand(dims)
        for name in ('q', 'k', 'v'):
            sd[p + f'attn.{name}_proj.weight'] = rand(dims, dims, scale=0.1)
        sd[p + 'attn.proj.weight'] = rand(dims, dims, scale=0.1)
        sd[p + 'attn.proj.bias'] = rand(dims)
        sd[p + 'attn.rope.freqs_cos'] = cos.clone()
        sd[p + 'attn.rope.freqs_sin'] = sin.clone()
        sd[p + 'norm2.weight'] = rand(dims, offset=1.)
        sd[p + 'norm2.bias'] = rand(dims)
        for name in ('w1', 'w2'):
            sd[p + f'mlp.{name}.weight'] = rand(hidden, dims, scale=0.1)
            sd[p + f'mlp.{name}.bias'] = rand(hidden)
        sd[p + 'mlp.ffn_ln.weight'] = rand(hidden, offset=1.)
        sd[p + 'mlp.ffn_ln.bias'] = rand(hidden)
        sd[p + 'mlp.w3.weight'] = rand(dims, hidden, scale=0.1)
        sd[p + 'mlp.w3.bias'] = rand(dims)
    for name in ('fpn1.0', 'fpn1.3', 'fpn2.0'):
        sd[f'backbone.{name}.weight'] = rand(dims, dims, 2, 2, scale=0.1)
        sd[f'backbone.{name}.bias'] = rand(dims)
    sd.update(bn('backbone.fpn1.1', dims))

    def conv_module(prefix, cout, cin, k):
        sd[f'{prefix}.conv.weight'] = rand(cout, cin, k, k, scale=0.05)
        sd.update(bn(f'{prefix}.bn', cout))

    c = channels
    sd['decode_head.conv_seg.weight'] = rand(NUM_CLASSES, c, 1, 1)
    sd['decode_head.conv_seg.bias'] = rand(NUM_CLASSES)
    for i in range(4):
        conv_module(f'decode_head.psp_modules.{i}.1', c, dims, 1)
    conv_module('decode_head.bottleneck', c, dims + 4 * c, 3)
    for i in range(3):
        conv_module(f'decode_head.lateral_convs.{i}', c, dims, 1)
        conv_module(f'decode_head.fpn_convs.{i}', c, c, 3)
    conv_module('decode_head.fpn_bottleneck', c, 4 * c, 3)
    conv_module('auxiliary_head.convs.0', aux, dims, 3)
    sd['auxiliary_head.conv_seg.weight'] = rand(NUM_CLASSES, aux, 1, 1)
    sd['auxiliary_head.conv_seg.bias'] = rand(NUM_CLASSES)
    return sd


def mmseg0_file(state):
    """The dict mmseg 0.x's (EVA's apex) runner saves."""
    return dict(
        meta=dict(
            mmseg_version='0.29.1+8288dd0',
            iter=80000,
            CLASSES=tuple(str(i) for i in range(NUM_CLASSES))),
        state_dict=state,
        optimizer=dict(state={}, param_groups=[]),
        amp=dict(loss_scaler0=dict(loss_scale=65536.0)))


# ------------------------------------------------------------- models
def _build(cfg_model):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(cfg_model)


def _load_cfg(path):
    return Config.fromfile(osp.join(ROOT, path))


def _small_cfg(path, dims=64, depth=4, heads=4, grid=4):
    """The config's model with a small architecture: its UPerHead / aux
    widths scaled with the embedding width, everything else as shipped."""
    cfg = _load_cfg(path)
    model = copy.deepcopy(cfg.model)
    full_dims = RELEASED[path.replace('apt_upernet', 'eva02_upernet')][0]
    channels = model.decode_head.channels * dims // full_dims
    aux = model.auxiliary_head.channels * dims // full_dims
    size = (grid * 16, grid * 16)
    model.backbone.update(
        arch=dict(
            embed_dims=dims, num_layers=depth, num_heads=heads,
            scale_mlp=True),
        img_size=size[0],
        pos_embed_grid=grid,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.,
        init_cfg=None)
    model.neck.embed_dim = dims
    model.decode_head.update(in_channels=[dims] * 4, channels=channels)
    model.auxiliary_head.update(in_channels=dims, channels=aux)
    model.data_preprocessor.update(size=size, test_cfg=dict(size=size))
    model.test_cfg.update(crop_size=size, stride=(43, 43))
    return model, (dims, depth, heads, grid, channels, aux)


# ----------------------------------------------- full size, shapes only
@contextlib.contextmanager
def _parameters_on_meta():
    """Build modules with their parameters on the ``meta`` device (no
    memory, no initialisation cost; buffers stay on the CPU), like
    accelerate's ``init_empty_weights``: a full-size L-640 UperNet has 550M
    parameters."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None:
            module._parameters[name] = nn.Parameter(
                param.to('meta'), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _assert_loads_strictly(model, state, missing_prefix=None):
    """What ``load_state_dict(strict=True)`` checks: the same keys (up to
    ``missing_prefix``, left out of ``state``) and the same shapes."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    assert not set(theirs) - set(ours), sorted(set(theirs) - set(ours))[:5]
    missing = set(ours) - set(theirs)
    if missing_prefix is None:
        assert not missing, sorted(missing)[:5]
    else:
        assert missing and all(k.startswith(missing_prefix)
                               for k in missing), sorted(missing)[:5]
    mismatched = [k for k in theirs if ours[k] != theirs[k]]
    assert not mismatched, [(k, ours[k], theirs[k]) for k in mismatched[:5]]


@pytest.mark.parametrize('path', sorted(RELEASED))
def test_released_layout_loads_strictly_at_full_size(path):
    """The real B-512 / L-512 / L-640 shapes (meta tensors: no memory)."""
    dims, depth, heads, grid, c, aux = RELEASED[path]
    state = released_state(dims, depth, heads, grid, c, aux, device='meta')
    converted, dropped, info = convert_eva02_seg_checkpoint(mmseg0_file(state))
    assert config_for(info) == path
    assert len(dropped) == 2 + 2 * depth  # RoPE tables only
    assert all('rope.freqs_' in d for d in dropped)
    for cfg_path in (path, _apt_path(path)):
        model_cfg = copy.deepcopy(_load_cfg(cfg_path).model)
        model_cfg.backbone.init_cfg = None
        with _parameters_on_meta():
            model = _build(model_cfg)
        _assert_loads_strictly(
            model, converted,
            None if cfg_path == path else 'backbone.apt_embed.')


def test_synthetic_layout_equals_the_released_l512_listing():
    """Our synthetic writer against the listing of EVA-02's own model: the
    same 521 backbone keys with the same shapes."""
    listed = {}
    with open(osp.join(FIXTURES, 'eva02_seg_L512_backbone_keys.txt')) as f:
        for line in f:
            if line.startswith('#'):
                continue
            key, shape = line.split(' ', 1)
            listed[key] = tuple(
                int(s) for s in shape.strip(' ()\n').split(',') if s.strip())
    state = released_state(1024, 24, 16, 32, 1024, 256, device='meta')
    ours = {
        k: tuple(v.shape)
        for k, v in state.items() if k.startswith('backbone.')
    }
    assert len(listed) == 521
    assert ours == listed


# ------------------------------------------------ small size, real values
def _convert_small(path, seed=0):
    model_cfg, arch = _small_cfg(path)
    state = released_state(*arch, seed=seed)
    converted, _, info = convert_eva02_seg_checkpoint(mmseg0_file(state))
    assert (info.embed_dims, info.num_layers,
            info.grid) == arch[:2] + (arch[3], )
    model = _build(model_cfg)
    model.load_state_dict(converted, strict=True)
    return model.eval(), state, arch


@pytest.mark.parametrize('path', sorted(RELEASED))
def test_values_land_where_they_should(path):
    model, src, (dims, depth, *_) = _convert_small(path)
    ours = model.state_dict()
    b = 'backbone.'
    assert torch.equal(ours[b + 'cls_token'], src[b + 'cls_token'])
    # the class row stays first in the table, the grid is not resampled
    assert torch.equal(ours[b + 'pos_embed'], src[b + 'pos_embed'])
    assert torch.equal(ours[b + 'pos_embed'][:, 0], src[b + 'pos_embed'][:, 0])
    for i in range(depth):
        p = f'{b}blocks.{i}.'
        q, k, v = ours[p + 'attn.qkv.weight'].split(dims)
        assert torch.equal(q, src[p + 'attn.q_proj.weight'])
        assert torch.equal(k, src[p + 'attn.k_proj.weight'])
        assert torch.equal(v, src[p + 'attn.v_proj.weight'])
        assert torch.equal(ours[p + 'attn.q_bias'], src[p + 'attn.q_bias'])
        assert torch.equal(ours[p + 'attn.v_bias'], src[p + 'attn.v_bias'])
        for suffix in ('weight', 'bias'):
            gate, value = ours[p + f'mlp.w12.{suffix}'].chunk(2)
            assert torch.equal(gate, src[p + f'mlp.w1.{suffix}'])
            assert torch.equal(value, src[p + f'mlp.w2.{suffix}'])
            assert torch.equal(ours[p + f'mlp.norm.{suffix}'],
                               src[p + f'mlp.ffn_ln.{suffix}'])
            assert torch.equal(ours[p + f'mlp.w3.{suffix}'],
                               src[p + f'mlp.w3.{suffix}'])
    for src_name, our_name in (('fpn1.0', 'levels.0.0'),
                               ('fpn1.3', 'levels.0.3'), ('fpn2.0',
                                                          'levels.1.0')):
        for suffix in ('weight', 'bias'):
            assert torch.equal(ours[f'neck.{our_name}.{suffix}'],
                               src[f'{b}{src_name}.{suffix}'])
    for suffix in BN_KEYS:
        assert torch.equal(ours[f'neck.levels.0.1.{suffix}'],
                           src[f'{b}fpn1.1.{suffix}'])
    heads = [
        k for k in src if k.startswith(('decode_head.', 'auxiliary_head.'))
    ]
    assert len(heads) == 2 + 4 * 6 + 6 + 3 * 12 + 6 + 6 + 2
    for key in heads:
        assert torch.equal(ours[key], src[key]), key


def _rotate_half(x):
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), -1).flatten(-2)


def reference_features(src, img, heads, out_indices):
    """The released backbone + fpn1..4 forward, from EVA-02's definition:
    cls token concatenated first, the stored table added as is, RoPE on
    every token but the class token, global attention, SwiGLU with its
    LayerNorm, class token dropped before the pyramid."""

    def p(key):
        return src['backbone.' + key]

    x = F.conv2d(
        img,
        p('patch_embed.proj.weight'),
        p('patch_embed.proj.bias'),
        stride=16)
    batch, dims, rows, cols = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([p('cls_token').expand(batch, -1, -1), x], 1)
    x = x + p('pos_embed')
    head_dim = dims // heads
    cos, sin = eva02_rope(rows, head_dim)
    depth = 1 + max(
        int(k.split('.')[2]) for k in src if k.startswith('backbone.blocks.'))
    feats = []
    for i in range(depth):

        def w(key):
            return p(f'blocks.{i}.{key}')

        h = F.layer_norm(x, (dims, ), w('norm1.weight'), w('norm1.bias'), 1e-6)
        q = F.linear(h, w('attn.q_proj.weight'), w('attn.q_bias'))
        k = F.linear(h, w('attn.k_proj.weight'))
        v = F.linear(h, w('attn.v_proj.weight'), w('attn.v_bias'))
        q, k, v = (
            t.reshape(batch, -1, heads, head_dim).transpose(1, 2)
            for t in (q, k, v))
        q = torch.cat(
            [q[:, :, :1], q[:, :, 1:] * cos + _rotate_half(q[:, :, 1:]) * sin],
            2)
        k = torch.cat(
            [k[:, :, :1], k[:, :, 1:] * cos + _rotate_half(k[:, :, 1:]) * sin],
            2)
        attn = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, -1, dims)
        x = x + F.linear(out, w('attn.proj.weight'), w('attn.proj.bias'))
        h = F.layer_norm(x, (dims, ), w('norm2.weight'), w('norm2.bias'), 1e-6)
        hidden = F.silu(F.linear(h, w('mlp.w1.weight'), w('mlp.w1.bias'))) \
            * F.linear(h, w('mlp.w2.weight'), w('mlp.w2.bias'))
        hidden = F.layer_norm(hidden,
                              hidden.shape[-1:], w('mlp.ffn_ln.weight'),
                              w('mlp.ffn_ln.bias'), 1e-6)
        x = x + F.linear(hidden, w('mlp.w3.weight'), w('mlp.w3.bias'))
        if i in out_indices:
            feats.append(x[:, 1:].transpose(1,
                                            2).reshape(batch, dims, rows,
                                                       cols))

    def convt(t, name):
        return F.conv_transpose2d(
            t, p(f'{name}.weight'), p(f'{name}.bias'), stride=2)

    up4 = convt(feats[0], 'fpn1.0')
    up4 = F.batch_norm(up4, p('fpn1.1.running_mean'), p('fpn1.1.running_var'),
                       p('fpn1.1.weight'), p('fpn1.1.bias'), False, 0., 1e-5)
    up4 = convt(F.gelu(up4), 'fpn1.3')
    return [
        up4,
        convt(feats[1], 'fpn2.0'), feats[2],
        F.max_pool2d(feats[3], 2)
    ]


@pytest.mark.parametrize('path', sorted(RELEASED))
def test_converted_segmentor_equals_the_released_forward(path):
    model, src, (dims, depth, heads, grid, *_) = _convert_small(path)
    torch.manual_seed(1)
    img = torch.randn(2, 3, grid * 16, grid * 16)
    with torch.no_grad():
        ours = model.extract_feat(img)
        ref = reference_features(src, img, heads, (0, 1, 2, 3))
    assert [tuple(o.shape) for o in ours] == [tuple(r.shape) for r in ref]
    for level, (a, b) in enumerate(zip(ours, ref)):
        assert torch.allclose(
            a, b, atol=1e-4, rtol=1e-4), (level, (a - b).abs().max())


@pytest.mark.parametrize('path', sorted(RELEASED))
def test_converted_segmentor_predicts_and_apt_without_merging_agrees(path):
    """tools/test.py's path (slide inference of a non-square image) runs on
    the converted model; its APT version loads the same file (only
    apt_embed missing) and, with no merging, gives the same logits."""
    from mmseg.structures import SegDataSample
    model, src, (dims, depth, heads, grid, *_) = _convert_small(path)
    converted, _, _ = convert_eva02_seg_checkpoint(mmseg0_file(src))
    apt_cfg, _ = _small_cfg(_apt_path(path))
    apt_cfg.backbone.thresholds = (-1, )
    apt = _build(apt_cfg).eval()
    result = apt.load_state_dict(converted, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        k.startswith('backbone.apt_embed.') for k in result.missing_keys)

    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    sample = SegDataSample(
        metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96)))
    batch = dict(inputs=[image], data_samples=[sample])
    with torch.no_grad():
        base_out = model.test_step(copy.deepcopy(batch))[0]
        apt_out = apt.test_step(copy.deepcopy(batch))[0]
    assert base_out.seg_logits.data.shape == (NUM_CLASSES, 64, 96)
    assert torch.isfinite(base_out.seg_logits.data).all()
    assert torch.allclose(
        base_out.seg_logits.data, apt_out.seg_logits.data, atol=1e-4)


# ------------------------------------------------------------ refusals
def _small_state(**kwargs):
    return released_state(32, 2, 2, 2, 16, 8, **kwargs)


def test_bare_state_dict_and_module_prefix_are_accepted():
    state = _small_state()
    a, _, info = convert_eva02_seg_checkpoint(state)
    b, _, _ = convert_eva02_seg_checkpoint({
        'module.' + k: v
        for k, v in state.items()
    })
    c, _, _ = convert_eva02_seg_checkpoint(mmseg0_file(state))
    assert list(a) == list(b) == list(c)
    assert info.img_size == 32 and config_for(info) is None


@pytest.mark.parametrize('extra, match', [
    ('backbone.norm.weight', 'no mmapt equivalent'),
    ('backbone.blocks.0.gamma_1', 'no mmapt equivalent'),
    ('backbone.fpn3.0.weight', 'no mmapt equivalent'),
    ('backbone.rel_pos_bias.relative_position_bias_table',
     'no mmapt equivalent'),
    ('roi_heads.box_predictor.cls_score.weight', 'no mmapt equivalent'),
])
def test_unknown_keys_are_refused_naming_the_layout(extra, match):
    state = _small_state()
    state[extra] = torch.zeros(4)
    with pytest.raises(ConversionError, match=match) as err:
        convert_eva02_seg_checkpoint(mmseg0_file(state))
    assert extra in str(err.value)
    assert 'mmseg 0.x' in str(err.value)


def test_a_mim_backbone_is_refused_pointing_at_the_other_converter():
    state = {
        k[len('backbone.'):]: v
        for k, v in _small_state().items()
        if k.startswith('backbone.') and '.fpn' not in k
    }
    with pytest.raises(ConversionError, match='eva02_to_mmapt.py'):
        convert_eva02_seg_checkpoint(dict(module=state))


def test_mim_weights_with_the_class_token_initialise_the_seg_backbone():
    """eva02_to_mmapt.py --keep-cls-token: the MIM class token and its
    position row reach a use_cls_token backbone (the grid is resampled to
    the fine-tune grid on load); a backbone without a class token loads the
    same file ignoring both."""
    from mmapt.converters import convert_eva02_state_dict
    from mmapt.models import EVA02
    from mmapt.models.layers import resize_pos_embed
    mim = {
        k[len('backbone.'):]: v
        for k, v in released_state(32, 2, 2, 3, 16, 8).items()
        if k.startswith('backbone.') and '.fpn' not in k
    }
    out, dropped = convert_eva02_state_dict(
        dict(module=mim), keep_cls_token=True)
    assert 'cls_token' in out and not any('cls' in d for d in dropped)
    arch = dict(embed_dims=32, num_layers=2, num_heads=2, scale_mlp=True)
    seg = EVA02(arch=arch, img_size=64, use_cls_token=True, pos_embed_grid=4)
    seg.load_state_dict(out, strict=True)
    assert torch.equal(seg.cls_token, mim['cls_token'])
    assert torch.equal(seg.pos_embed[:, 0], mim['pos_embed'][:, 0])
    assert torch.allclose(seg.pos_embed[:, 1:],
                          resize_pos_embed(mim['pos_embed'], (4, 4)))
    plain = EVA02(arch=arch, img_size=64, pos_embed_grid=3)
    result = plain.load_state_dict(out, strict=False)
    assert result.unexpected_keys == ['cls_token']
    assert not result.missing_keys
    assert torch.equal(plain.pos_embed, mim['pos_embed'][:, 1:])
    without = {k: v for k, v in mim.items() if k != 'cls_token'}
    with pytest.raises(ConversionError, match='cls_token'):
        convert_eva02_state_dict(without, keep_cls_token=True)


def test_other_rope_settings_are_refused():
    """Dropping the stored RoPE tables is only safe when mmapt recomputes
    the same ones: a model trained with another reference grid fails."""
    state = _small_state(pt_grid=32)
    with pytest.raises(ConversionError, match='RoPE'):
        convert_eva02_seg_checkpoint(state)


def test_position_table_without_class_row_is_refused():
    state = _small_state()
    state['backbone.pos_embed'] = state['backbone.pos_embed'][:, 1:]
    with pytest.raises(ConversionError, match='class row'):
        convert_eva02_seg_checkpoint(state)


def _run_tool(argv, monkeypatch, capsys):
    """tools/model_converters/eva02_seg_to_mmapt.py in this process."""
    path = osp.join(ROOT, 'tools', 'model_converters', 'eva02_seg_to_mmapt.py')
    spec = importlib.util.spec_from_file_location('eva02_seg_to_mmapt', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(sys, 'argv', ['eva02_seg_to_mmapt.py', *argv])
    return tool.main(), capsys.readouterr()


def test_cli_converts_and_refuses(tmp_path, monkeypatch, capsys):
    src = tmp_path / 'eva02_seg.pth'
    torch.save(mmseg0_file(_small_state()), src)
    dst = tmp_path / 'out.pth'
    code, out = _run_tool([str(src), str(dst)], monkeypatch, capsys)
    assert code == 0
    assert 'dropped backbone.rope.freqs_cos' in out.out
    saved = torch.load(dst, map_location='cpu', weights_only=False)
    assert saved['meta']['architecture']['grid'] == 2
    assert 'neck.levels.0.1.running_var' in saved['state_dict']
    assert 'no shipped config' in out.err

    bad = tmp_path / 'bad.pth'
    torch.save(
        {'model': {
            'backbone.net.blocks.0.norm1.weight': torch.zeros(2)
        }}, bad)
    code, out = _run_tool([str(bad), str(tmp_path / 'x.pth')], monkeypatch,
                          capsys)
    assert code == 1
    assert 'released EVA-02 UperNet segmentor' in out.err
    assert not (tmp_path / 'x.pth').exists()


def test_config_for_names_the_shipped_configs():
    for path, (dims, depth, _, grid, c, aux) in RELEASED.items():
        cfg = _load_cfg(path)
        assert cfg.model.backbone.pos_embed_grid == grid
        assert cfg.model.decode_head.channels == c
        assert cfg.model.auxiliary_head.channels == aux
        assert cfg.model.backbone.img_size == grid * 16
        assert cfg.model.backbone.use_cls_token is True


# ------------------------------------------- the documented commands, e2e
SMALL_640 = '''_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=64, num_layers=4, num_heads=4,
                  scale_mlp=True),
        img_size=64, pos_embed_grid=4, out_indices=(0, 1, 2, 3)),
    neck=dict(embed_dim=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=96),
    auxiliary_head=dict(in_channels=64, channels=96),
    data_preprocessor=dict(size=(64, 64), test_cfg=dict(size=(64, 64))),
    test_cfg=dict(crop_size=(64, 64), stride=(43, 43)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(1.0, 1.5),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=(64, 64)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={root!r}, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root={root!r}, pipeline=test_pipeline))
test_dataloader = val_dataloader
'''


def _small_config(tmp_path, name, root):
    """A config file: ``configs/NAME.py`` with a small architecture (the
    L-640 proportions) on the toy data."""
    path = tmp_path / f'{name}_small.py'
    path.write_text(
        SMALL_640.format(
            base=osp.join(ROOT, 'configs', f'{name}.py'), root=root))
    return str(path)


def _missing_keys(log):
    found = re.findall(r'missing keys in source state_dict: (.*)', log)
    return [k.strip() for k in found[0].split(',')] if found else []


@pytest.fixture(scope='module')
def converted_small(tmp_path_factory):
    """Toy ADE20K-layout data and a small L-640-shaped released checkpoint
    converted by the CLI (docs/reproduce.md step 1)."""
    from conftest import run_tool
    tmp = tmp_path_factory.mktemp('released_small')
    root = str(tmp / 'toy_ade')
    run_tool([
        'tools/misc/make_toy_ade.py', root, '--num-train', '4', '--num-val',
        '2'
    ])
    src, ckpt = tmp / 'released.pth', tmp / 'converted.pth'
    torch.save(mmseg0_file(released_state(64, 4, 4, 4, 96, 96)), src)
    run_tool(
        ['tools/model_converters/eva02_seg_to_mmapt.py',
         str(src),
         str(ckpt)])
    return root, str(ckpt)


@pytest.mark.slow
def test_tools_test_on_the_converted_baseline_and_apt(converted_small,
                                                      tmp_path):
    """docs/reproduce.md steps 2-3: tools/test.py (mmengine's Runner: SyncBN
    reverted to BN, slide inference, IoUMetric) on the baseline config
    (nothing missing) and the APT config (only apt_embed missing)."""
    from conftest import run_tool
    root, ckpt = converted_small
    for name in ('eva02_upernet_ade20k_large_640',
                 'apt_upernet_ade20k_large_640'):
        work_dir = tmp_path / name
        proc = run_tool([
            'tools/test.py',
            _small_config(tmp_path, name, root), ckpt, '--work-dir',
            str(work_dir)
        ])
        log = proc.stdout + proc.stderr
        with open(work_dir / 'test_metrics.json') as f:
            metrics = json.load(f)
        assert 0 <= metrics['mIoU'] <= 100
        assert 'unexpected key' not in log
        missing = _missing_keys(log)
        if name.startswith('eva02'):
            assert not missing
        else:
            assert missing and all(
                k.startswith('backbone.apt_embed.') for k in missing)


@pytest.mark.slow
def test_finetune_config_trains_from_the_converted_file(
        converted_small, tmp_path):
    """docs/reproduce.md step 4: the L-640 APT fine-tune config starts from
    the converted file (its load_from) and trains (2 iterations here)."""
    from conftest import run_tool
    root, ckpt = converted_small
    # the config's own load_from, relative to the working directory
    (tmp_path / 'checkpoints').mkdir()
    shutil.copy(
        ckpt,
        tmp_path / 'checkpoints' / 'eva02_L_ade_seg_upernet_sz640_mmapt.pth')
    config = _small_config(tmp_path, 'apt_upernet_ade20k_large_640_finetune',
                           root)
    work_dir = tmp_path / 'finetune'
    proc = run_tool([
        'tools/train.py', config, '--work-dir',
        str(work_dir), '--cfg-options', 'train_cfg.max_iters=2',
        'train_cfg.val_interval=1000', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1'
    ],
                    cwd=str(tmp_path))
    log = proc.stdout + proc.stderr
    assert 'Load checkpoint from checkpoints/' \
        'eva02_L_ade_seg_upernet_sz640_mmapt.pth' in log
    missing = _missing_keys(log)
    assert missing and all(
        k.startswith('backbone.apt_embed.') for k in missing)
    assert (work_dir / 'iter_2.pth').exists()
