"""Released EVA-02 ViTDet detectors: the detectron2 -> mmapt converter and
the detectron2 test-time rules of D2CascadeRoIHead / D2RoIExtractor.

Synthetic detectron2 checkpoints are generated from the key formulas of the
released files (``backbone.net.*``, ``backbone.simfp_*``, ``proposal_
generator.*``, ``roi_heads.*``). The real B and L layouts are checked on the
meta device (keys and shapes, strict load, no memory); values and behaviour
on a small detector (64-d ViT, 32-channel heads) against references written
from detectron2's rules.
"""
import copy
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmdet')
from conftest import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData

from mmapt.converters import ConversionError
from mmapt.converters.eva02_det_convert import (config_for,
                                                convert_eva02_det_checkpoint)

# detectron2 Box2BoxTransform weights of the three cascade stages.
STAGE_WEIGHTS = ((10., 10., 5., 5.), (20., 20., 10., 10.), (30., 30., 15.,
                                                            15.))
SCALE_CLAMP = math.log(1000. / 16)


# ------------------------------------------------- synthetic checkpoints
def d2_detector_state(dims=64,
                      depth=2,
                      head_dim=16,
                      window=8,
                      grid=16,
                      global_blocks=(1, ),
                      num_classes=3,
                      fpn=32,
                      fc=64,
                      ema=False,
                      device='cpu',
                      seed=0):
    """A detectron2 EVA-02 Cascade Mask R-CNN state dict (``model``, or the
    ``ema_state`` layout with ``ema=True``) with random values."""
    gen = torch.Generator().manual_seed(seed) if device == 'cpu' else None
    state = {}

    def add(key, *shape, ones=False):
        if device == 'meta':
            state[key] = torch.empty(shape, device='meta')
            return
        value = torch.randn(shape, generator=gen) * 0.05
        state[key] = value + 1 if ones else value

    def conv_norm(key, cout, cin, k):
        add(f'{key}.weight', cout, cin, k, k)
        add(f'{key}.norm.weight', cout, ones=True)
        add(f'{key}.norm.bias', cout)

    d, c, hidden = dims, fpn, int(dims * 4 * 2 / 3)
    # Simple feature pyramid.
    add('backbone.simfp_2.0.weight', d, d // 2, 2, 2)
    add('backbone.simfp_2.0.bias', d // 2)
    add('backbone.simfp_2.1.weight', d // 2, ones=True)
    add('backbone.simfp_2.1.bias', d // 2)
    add('backbone.simfp_2.3.weight', d // 2, d // 4, 2, 2)
    add('backbone.simfp_2.3.bias', d // 4)
    conv_norm('backbone.simfp_2.4', c, d // 4, 1)
    conv_norm('backbone.simfp_2.5', c, c, 3)
    add('backbone.simfp_3.0.weight', d, d // 2, 2, 2)
    add('backbone.simfp_3.0.bias', d // 2)
    conv_norm('backbone.simfp_3.1', c, d // 2, 1)
    conv_norm('backbone.simfp_3.2', c, c, 3)
    conv_norm('backbone.simfp_4.0', c, d, 1)
    conv_norm('backbone.simfp_4.1', c, c, 3)
    conv_norm('backbone.simfp_5.1', c, d, 1)
    conv_norm('backbone.simfp_5.2', c, c, 3)
    # The ViT: 14 x 14 table with a class row, separate q/k/v, SwiGLU.
    net = 'backbone.net.'
    add(net + 'pos_embed', 1, 1 + 14 * 14, d)
    add(net + 'patch_embed.proj.weight', d, 3, 16, 16)
    add(net + 'patch_embed.proj.bias', d)
    for kind, side in (('win', window), ('glb', grid)):
        for fn in ('cos', 'sin'):
            add(f'{net}rope_{kind}.freqs_{fn}', side * side, head_dim)
    for i in range(depth):
        b = f'{net}blocks.{i}.'
        for name in ('norm1', 'norm2'):
            add(b + name + '.weight', d, ones=True)
            add(b + name + '.bias', d)
        add(b + 'attn.q_bias', d)
        add(b + 'attn.v_bias', d)
        for name in ('q', 'k', 'v'):
            add(f'{b}attn.{name}_proj.weight', d, d)
        if not ema:  # the EMA state has no per-block RoPE copies
            side = grid if i in global_blocks else window
            for fn in ('cos', 'sin'):
                add(f'{b}attn.rope.freqs_{fn}', side * side, head_dim)
        add(b + 'attn.proj.weight', d, d)
        add(b + 'attn.proj.bias', d)
        for name in ('w1', 'w2'):
            add(f'{b}mlp.{name}.weight', hidden, d)
            add(f'{b}mlp.{name}.bias', hidden)
        add(b + 'mlp.ffn_ln.weight', hidden, ones=True)
        add(b + 'mlp.ffn_ln.bias', hidden)
        add(b + 'mlp.w3.weight', d, hidden)
        add(b + 'mlp.w3.bias', d)
    # RPN: 2 convs, 3 anchors per location.
    rpn = 'proposal_generator.rpn_head.'
    for i in range(2):
        add(f'{rpn}conv.conv{i}.weight', c, c, 3, 3)
        add(f'{rpn}conv.conv{i}.bias', c)
    add(rpn + 'objectness_logits.weight', 3, c, 1, 1)
    add(rpn + 'objectness_logits.bias', 3)
    add(rpn + 'anchor_deltas.weight', 12, c, 1, 1)
    add(rpn + 'anchor_deltas.bias', 12)
    # Cascade box heads (4 conv + LN, fc1) and predictors (bg last).
    for k in range(3):
        for j in range(1, 5):
            conv_norm(f'roi_heads.box_head.{k}.conv{j}', c, c, 3)
        add(f'roi_heads.box_head.{k}.fc1.weight', fc, c * 49)
        add(f'roi_heads.box_head.{k}.fc1.bias', fc)
        add(f'roi_heads.box_predictor.{k}.cls_score.weight', num_classes + 1,
            fc)
        add(f'roi_heads.box_predictor.{k}.cls_score.bias', num_classes + 1)
        add(f'roi_heads.box_predictor.{k}.bbox_pred.weight', 4, fc)
        add(f'roi_heads.box_predictor.{k}.bbox_pred.bias', 4)
    # One mask head.
    for j in range(1, 5):
        conv_norm(f'roi_heads.mask_head.mask_fcn{j}', c, c, 3)
    add('roi_heads.mask_head.deconv.weight', c, c, 2, 2)
    add('roi_heads.mask_head.deconv.bias', c)
    add('roi_heads.mask_head.predictor.weight', num_classes, c, 1, 1)
    add('roi_heads.mask_head.predictor.bias', num_classes)
    if ema:
        add('pixel_mean', 3, 1, 1)
        add('pixel_std', 3, 1, 1)
        for i in range(5):
            add(f'proposal_generator.anchor_generator.cell_anchors.{i}', 3, 4)
    return state


SMALL = {
    'model.backbone.arch':
    dict(
        _delete_=True,
        embed_dims=64,
        num_layers=2,
        num_heads=4,
        scale_mlp=True),
    'model.backbone.img_size':
    256,
    'model.backbone.window_size':
    8,
    'model.backbone.global_attn_indexes': (1, ),
    'model.backbone.drop_path_rate':
    0.,
    'model.backbone.init_cfg':
    None,
    'model.data_preprocessor.pad_size_divisor':
    256,
    'model.data_preprocessor.batch_augments':
    [dict(type='BatchFixedSizePad', size=(256, 256), pad_mask=True)],
    'model.neck.backbone_channel':
    64,
    'model.neck.in_channels': [16, 32, 64, 64],
    'model.neck.out_channels':
    32,
    'model.rpn_head.in_channels':
    32,
    'model.rpn_head.feat_channels':
    32,
    'model.roi_head.bbox_roi_extractor.out_channels':
    32,
    'model.roi_head.mask_roi_extractor.out_channels':
    32,
    'model.roi_head.mask_head.in_channels':
    32,
    'model.roi_head.mask_head.conv_out_channels':
    32,
    'model.roi_head.mask_head.num_classes':
    3,
    # Fewer proposals keep the uncapped soft-NMS and mask pasting small.
    'model.test_cfg.rpn.nms_pre':
    200,
    'model.test_cfg.rpn.max_per_img':
    60,
}
for _k in range(3):
    SMALL.update({
        f'model.roi_head.bbox_head.{_k}.in_channels': 32,
        f'model.roi_head.bbox_head.{_k}.conv_out_channels': 32,
        f'model.roi_head.bbox_head.{_k}.fc_out_channels': 64,
        f'model.roi_head.bbox_head.{_k}.num_classes': 3,
    })


def build_detector(name, device=None, small=True, released=True, **options):
    """A detector from a config (small: the SMALL architecture; released:
    with ``tools/test.py --released-scoring``'s test rules)."""
    from mmdet.registry import MODELS

    from mmapt.engine.released import apply_released_test_cfg
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    if small:
        cfg.merge_from_dict(copy.deepcopy(SMALL))
    if released:
        apply_released_test_cfg(cfg)
    cfg.merge_from_dict(options)
    init_default_scope('mmdet')
    if device == 'meta':
        with torch.device('meta'):
            return MODELS.build(cfg.model)
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


@pytest.fixture(scope='module')
def converted():
    """A small synthetic release, its conversion and the model loaded with
    it (strictly)."""
    src = d2_detector_state()
    state, dropped, info = convert_eva02_det_checkpoint(
        dict(model=src, trainer={}, iteration=10))
    model = build_detector('eva02_vitdet_coco.py')
    model.load_state_dict(state, strict=True)
    return src, state, dropped, info, model


# ------------------------------------------------------------- converter
def _release(dims, depth, window, grid, global_blocks):
    """Keyword arguments of d2_detector_state for a released layout."""
    return dict(
        dims=dims,
        depth=depth,
        head_dim=64,
        window=window,
        grid=grid,
        global_blocks=global_blocks,
        num_classes=80,
        fpn=256,
        fc=1024)


# The released COCO layouts (width, depth, window, image grid, global
# blocks) and the configs they load into.
RELEASES = {
    'eva02_vitdet_coco.py':
    _release(768, 12, 32, 96, (1, 3, 5, 7, 9, 11)),
    'eva02_vitdet_coco_1024.py':
    _release(768, 12, 16, 64, (2, 5, 8, 11)),
    'eva02_vitdet_coco_large.py':
    _release(1024, 24, 32, 96, tuple(range(2, 24, 3))),
    'eva02_vitdet_coco_large_1024.py':
    _release(1024, 24, 16, 64, (5, 11, 17, 23)),
    'eva02_vitdet_coco_large_o365.py':
    _release(1024, 24, 16, 96, tuple(range(2, 24, 3))),
}


@pytest.mark.parametrize('name', sorted(RELEASES))
def test_released_layouts_load_strictly(name):
    """The real B/L layouts (keys and shapes, meta device): strict into the
    baseline config, only apt_embed.* missing from the APT version, and the
    converter names the config from the shapes. The Objects365 one comes as
    an EMA state (no per-block RoPE tables, anchors and pixel statistics)."""
    use_ema = 'o365' in name
    src = d2_detector_state(device='meta', ema=use_ema, **RELEASES[name])
    if use_ema:
        checkpoint = dict(model={}, ema_state=src, iteration=1)
    else:
        checkpoint = src
    state, dropped, info = convert_eva02_det_checkpoint(
        checkpoint, use_ema=use_ema)
    assert config_for(info) == f'configs/{name}'
    model = build_detector(name, device='meta', small=False)
    model.load_state_dict(state, strict=True)
    apt = build_detector(
        name,
        device='meta',
        small=False,
        **{'model.backbone.type': 'APTEVA02'})
    result = apt.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(
        k.startswith('backbone.apt_embed.') for k in result.missing_keys)
    # Every source key is mapped or dropped with a reason.
    n_mapped = len(src) - len(dropped)
    assert n_mapped > 0 and all('(' in reason for reason in dropped)
    assert any('rope_glb' in reason for reason in dropped)
    assert any('pos_embed[:, 0]' in reason for reason in dropped)
    if use_ema:
        assert any(r.startswith('pixel_mean') for r in dropped)
        assert any('cell_anchors.4' in r for r in dropped)


def test_b_1536_layout_reads_its_architecture():
    src = d2_detector_state(device='meta', **RELEASES['eva02_vitdet_coco.py'])
    _, _, info = convert_eva02_det_checkpoint(src)
    assert info.global_blocks == (1, 3, 5, 7, 9, 11)
    assert (info.embed_dims, info.num_layers, info.num_classes,
            info.window_size, info.img_size) == (768, 12, 80, 32, 1536)


def test_values_land_where_they_should(converted):
    src, state, _, info, model = converted
    assert (info.embed_dims, info.num_classes, info.window_size, info.img_size,
            info.global_blocks) == (64, 3, 8, 256, (1, ))
    sd = model.state_dict()

    def same(ours, theirs):
        assert torch.equal(sd[ours], theirs), ours

    net = 'backbone.net.blocks.1.'
    same(
        'backbone.blocks.1.attn.qkv.weight',
        torch.cat([
            src[net + 'attn.q_proj.weight'], src[net + 'attn.k_proj.weight'],
            src[net + 'attn.v_proj.weight']
        ]))
    same('backbone.blocks.1.attn.q_bias', src[net + 'attn.q_bias'])
    same('backbone.blocks.1.attn.v_bias', src[net + 'attn.v_bias'])
    same('backbone.blocks.1.mlp.w12.weight',
         torch.cat([src[net + 'mlp.w1.weight'], src[net + 'mlp.w2.weight']]))
    same('backbone.blocks.1.mlp.w12.bias',
         torch.cat([src[net + 'mlp.w1.bias'], src[net + 'mlp.w2.bias']]))
    same('backbone.blocks.1.mlp.norm.weight', src[net + 'mlp.ffn_ln.weight'])
    same('backbone.blocks.1.mlp.w3.weight', src[net + 'mlp.w3.weight'])
    same('backbone.pos_embed', src['backbone.net.pos_embed'][:, 1:])
    # Channel LNs of the pyramid and the heads.
    same('neck.fpn1.1.weight', src['backbone.simfp_2.1.weight'])
    same('neck.lateral_convs.0.ln.bias', src['backbone.simfp_2.4.norm.bias'])
    same('neck.fpn_convs.3.ln.weight', src['backbone.simfp_5.2.norm.weight'])
    same('neck.lateral_convs.2.conv.weight', src['backbone.simfp_4.0.weight'])
    same('roi_head.bbox_head.2.shared_convs.3.ln.weight',
         src['roi_heads.box_head.2.conv4.norm.weight'])
    same('roi_head.mask_head.0.convs.1.ln.bias',
         src['roi_heads.mask_head.mask_fcn2.norm.bias'])
    # Classifier rows (background last in both) and the regressor.
    for k in range(3):
        same(f'roi_head.bbox_head.{k}.fc_cls.weight',
             src[f'roi_heads.box_predictor.{k}.cls_score.weight'])
        same(f'roi_head.bbox_head.{k}.fc_reg.bias',
             src[f'roi_heads.box_predictor.{k}.bbox_pred.bias'])
    same('roi_head.mask_head.0.conv_logits.weight',
         src['roi_heads.mask_head.predictor.weight'])
    same('roi_head.mask_head.0.upsample.weight',
         src['roi_heads.mask_head.deconv.weight'])
    same('rpn_head.rpn_conv.1.conv.bias',
         src['proposal_generator.rpn_head.conv.conv1.bias'])
    same('rpn_head.rpn_reg.weight',
         src['proposal_generator.rpn_head.anchor_deltas.weight'])
    assert len(model.roi_head.mask_head) == 1


def _rope_d2(height, width, ref, head_dim):
    """detectron2's flattened RoPE cos/sin (interleaved, rows first)."""
    dim = head_dim // 2
    freqs = 1. / 10000**(torch.arange(0, dim, 2).float() / dim)
    rows = torch.arange(height).float() / height * ref
    cols = torch.arange(width).float() / width * ref
    fr = (rows[:, None] * freqs).repeat_interleave(2, -1)
    fc = (cols[:, None] * freqs).repeat_interleave(2, -1)
    angles = torch.cat([
        fr[:, None, :].expand(height, width, dim), fc[None, :, :].expand(
            height, width, dim)
    ], -1).reshape(height * width, head_dim)
    return angles.cos(), angles.sin()


def _vit_d2(src, x, dims=64, depth=2, heads=4, window=8, global_blocks=(1, )):
    """detectron2's EVA-02 ViT forward, written from the released code's
    rules: bicubic 14x14 table, separate q/k/v with q/v biases, RoPE on q/k,
    SwiGLU w3(ffn_ln(silu(w1 x) * w2 x)), windows, no final norm."""
    net = {
        k[len('backbone.net.'):]: v
        for k, v in src.items() if k.startswith('backbone.net.')
    }
    hd = dims // heads
    tokens = F.conv2d(
        x,
        net['patch_embed.proj.weight'],
        net['patch_embed.proj.bias'],
        stride=16)
    b, _, gh, gw = tokens.shape
    pos = net['pos_embed'][:, 1:].reshape(1, 14, 14, dims).permute(0, 3, 1, 2)
    pos = F.interpolate(
        pos, size=(gh, gw), mode='bicubic', align_corners=False)
    h = (tokens + pos).permute(0, 2, 3, 1)  # (B, H, W, C)

    def rotate(t, cos, sin):
        pairs = t.unflatten(-1, (-1, 2))
        rot = torch.stack([-pairs[..., 1], pairs[..., 0]], -1).flatten(-2)
        return t * cos + rot * sin

    for i in range(depth):
        p = f'blocks.{i}.'
        y = F.layer_norm(h, (dims, ), net[p + 'norm1.weight'],
                         net[p + 'norm1.bias'], 1e-6)
        side = None if i in global_blocks else window
        if side:  # (B * nW, ws * ws, C)
            y = y.view(b, gh // side, side, gw // side, side,
                       dims).permute(0, 1, 3, 2, 4,
                                     5).reshape(-1, side * side, dims)
            cos, sin = _rope_d2(side, side, 16, hd)
        else:
            y = y.reshape(b, gh * gw, dims)
            cos, sin = _rope_d2(gh, gw, 16, hd)
        q = F.linear(y, net[p + 'attn.q_proj.weight'], net[p + 'attn.q_bias'])
        k = F.linear(y, net[p + 'attn.k_proj.weight'])
        v = F.linear(y, net[p + 'attn.v_proj.weight'], net[p + 'attn.v_bias'])
        q, k, v = (
            t.unflatten(-1, (heads, hd)).transpose(1, 2) for t in (q, k, v))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(hd)).softmax(-1) @ v
        y = F.linear(
            attn.transpose(1, 2).flatten(2), net[p + 'attn.proj.weight'],
            net[p + 'attn.proj.bias'])
        if side:
            y = y.view(b, gh // side, gw // side, side, side,
                       dims).permute(0, 1, 3, 2, 4,
                                     5).reshape(b, gh, gw, dims)
        else:
            y = y.view(b, gh, gw, dims)
        h = h + y
        y = F.layer_norm(h, (dims, ), net[p + 'norm2.weight'],
                         net[p + 'norm2.bias'], 1e-6)
        y = F.silu(
            F.linear(y, net[p + 'mlp.w1.weight'],
                     net[p + 'mlp.w1.bias'])) * F.linear(
                         y, net[p + 'mlp.w2.weight'], net[p + 'mlp.w2.bias'])
        y = F.layer_norm(y, y.shape[-1:], net[p + 'mlp.ffn_ln.weight'],
                         net[p + 'mlp.ffn_ln.bias'], 1e-6)
        h = h + F.linear(y, net[p + 'mlp.w3.weight'], net[p + 'mlp.w3.bias'])
    return h.permute(0, 3, 1, 2)


def _ln2d(x, src, key):
    out = F.layer_norm(
        x.permute(0, 2, 3, 1), x.shape[1:2], src[key + '.weight'],
        src[key + '.bias'], 1e-6)
    return out.permute(0, 3, 1, 2)


def _simfp_d2(src, x):
    """detectron2's SimpleFeaturePyramid (LN norms, no conv bias) + p6."""

    def conv_ln(t, key, pad):
        t = F.conv2d(t, src[key + '.weight'], padding=pad)
        return _ln2d(t, src, key + '.norm')

    s = 'backbone.simfp_'
    p2 = F.conv_transpose2d(x, src[s + '2.0.weight'], src[s + '2.0.bias'], 2)
    p2 = F.gelu(_ln2d(p2, src, s + '2.1'))
    p2 = F.conv_transpose2d(p2, src[s + '2.3.weight'], src[s + '2.3.bias'], 2)
    p2 = conv_ln(conv_ln(p2, s + '2.4', 0), s + '2.5', 1)
    p3 = F.conv_transpose2d(x, src[s + '3.0.weight'], src[s + '3.0.bias'], 2)
    p3 = conv_ln(conv_ln(p3, s + '3.1', 0), s + '3.2', 1)
    p4 = conv_ln(conv_ln(x, s + '4.0', 0), s + '4.1', 1)
    p5 = conv_ln(conv_ln(F.max_pool2d(x, 2, 2), s + '5.1', 0), s + '5.2', 1)
    return p2, p3, p4, p5, F.max_pool2d(p5, 1, 2)


def test_backbone_and_pyramid_equal_detectron2_reference(converted):
    """q/k/v, SwiGLU, RoPE, windows, the 14x14 table and the channel-LN
    pyramid computed as detectron2 does, on the converted weights."""
    src, _, _, _, model = converted
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _vit_d2(src, x)
        got = model.backbone(x)[0]
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
        pyramid = model.neck((got, ))
        for ours, ref in zip(pyramid, _simfp_d2(src, want)):
            torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_box_and_mask_heads_equal_detectron2_reference(converted):
    """FastRCNNConvFCHead + predictor and the mask head, detectron2's
    layer order (conv -> channel LN -> ReLU; flatten C-major; fc -> ReLU)."""
    src, _, _, _, model = converted
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(5, 32, 7, 7, generator=gen)
    with torch.no_grad():
        for k in range(3):
            h = feats
            for j in range(1, 5):
                key = f'roi_heads.box_head.{k}.conv{j}'
                h = F.relu(
                    _ln2d(
                        F.conv2d(h, src[key + '.weight'], padding=1), src,
                        key + '.norm'))
            h = F.relu(
                F.linear(
                    h.flatten(1), src[f'roi_heads.box_head.{k}.fc1.weight'],
                    src[f'roi_heads.box_head.{k}.fc1.bias']))
            pred = f'roi_heads.box_predictor.{k}.'
            cls, reg = model.roi_head.bbox_head[k](feats)
            torch.testing.assert_close(
                cls,
                F.linear(h, src[pred + 'cls_score.weight'],
                         src[pred + 'cls_score.bias']))
            torch.testing.assert_close(
                reg,
                F.linear(h, src[pred + 'bbox_pred.weight'],
                         src[pred + 'bbox_pred.bias']))
        m = torch.randn(2, 32, 14, 14, generator=gen)
        h = m
        for j in range(1, 5):
            key = f'roi_heads.mask_head.mask_fcn{j}'
            h = F.relu(
                _ln2d(
                    F.conv2d(h, src[key + '.weight'], padding=1), src,
                    key + '.norm'))
        h = F.relu(
            F.conv_transpose2d(h, src['roi_heads.mask_head.deconv.'
                                      'weight'],
                               src['roi_heads.mask_head.deconv.bias'], 2))
        want = F.conv2d(h, src['roi_heads.mask_head.predictor.weight'],
                        src['roi_heads.mask_head.predictor.bias'])
        torch.testing.assert_close(model.roi_head.mask_head[0](m), want)


def test_training_dict_bare_dict_and_ema():
    src = d2_detector_state(seed=3)
    ema = d2_detector_state(seed=4, ema=True)
    bare, _, _ = convert_eva02_det_checkpoint(src)
    wrapped, _, _ = convert_eva02_det_checkpoint(
        dict(model=src, trainer=dict(), iteration=5, ema_state=ema))
    assert bare.keys() == wrapped.keys()
    assert all(torch.equal(bare[k], wrapped[k]) for k in bare)
    from_ema, dropped, info = convert_eva02_det_checkpoint(
        dict(model=src, ema_state=ema), use_ema=True)
    assert from_ema.keys() == bare.keys()
    key = 'roi_head.bbox_head.1.fc_cls.weight'
    assert torch.equal(from_ema[key],
                       ema['roi_heads.box_predictor.1.cls_score.weight'])
    assert not torch.equal(from_ema[key], bare[key])
    # Without per-block RoPE tables the global blocks are unknown.
    assert info.global_blocks is None and info.window_size == 8
    with pytest.raises(ConversionError, match='--ema'):
        convert_eva02_det_checkpoint(dict(model=src), use_ema=True)
    with pytest.raises(ConversionError, match='--ema'):
        convert_eva02_det_checkpoint(dict(ema_state=ema))


def test_lvis_layout_converts_without_a_config():
    """LVIS releases: federated-loss weights dropped, the class count read
    from the shapes, no shipped config claimed."""
    src = d2_detector_state(seed=8, num_classes=5)
    for k in range(3):
        src[f'roi_heads.box_predictor.{k}.fed_loss_cls_weights'] = \
            torch.ones(5)
    state, dropped, info = convert_eva02_det_checkpoint(src)
    assert info.num_classes == 5 and config_for(info) is None
    assert state['roi_head.bbox_head.0.fc_cls.weight'].shape[0] == 6
    assert sum('federated' in reason for reason in dropped) == 3


def test_three_mask_heads_for_stock_cascade():
    src = d2_detector_state(seed=5)
    state, _, _ = convert_eva02_det_checkpoint(src, mask_heads=3)
    for s in range(3):
        assert torch.equal(state[f'roi_head.mask_head.{s}.conv_logits.bias'],
                           src['roi_heads.mask_head.predictor.bias'])
    with pytest.raises(ValueError, match='mask_heads'):
        convert_eva02_det_checkpoint(src, mask_heads=2)


def test_unexpected_and_missing_keys_are_refused():
    src = d2_detector_state(seed=6)
    extra = dict(src)
    extra['roi_heads.keypoint_head.fc.weight'] = torch.zeros(1)
    with pytest.raises(ConversionError) as err:
        convert_eva02_det_checkpoint(extra)
    assert 'keypoint_head' in str(err.value)
    assert 'backbone.simfp_' in str(err.value)  # names the expected layout
    missing = {k: v for k, v in src.items() if 'box_predictor.2' not in k}
    with pytest.raises(ConversionError, match='missing'):
        convert_eva02_det_checkpoint(missing)
    with pytest.raises(ConversionError, match='detectron2 EVA-02'):
        convert_eva02_det_checkpoint(
            {'blocks.0.attn.qkv.weight': torch.zeros(3, 1)})
    bad = dict(src)
    bad['roi_heads.mask_head.predictor.weight'] = torch.zeros(5, 32, 1, 1)
    with pytest.raises(ConversionError, match='mask predictor'):
        convert_eva02_det_checkpoint(bad)


def test_converter_tool(tmp_path):
    from conftest import run_tool
    src = d2_detector_state(seed=7)
    path = tmp_path / 'eva02_small.pth'
    torch.save(dict(model=src, trainer={}, iteration=3), path)
    out = tmp_path / 'out.pth'
    proc = run_tool([
        'tools/model_converters/eva02_det_to_mmapt.py',
        str(path),
        str(out), '--quiet'
    ])
    assert 'saved' in proc.stdout and 'no shipped config' in proc.stdout
    ckpt = torch.load(out, map_location='cpu')
    assert torch.equal(
        ckpt['state_dict']['rpn_head.rpn_cls.weight'],
        src['proposal_generator.rpn_head.objectness_logits.'
            'weight'])
    assert ckpt['meta']['num_classes'] == 3
    fail = run_tool([
        'tools/model_converters/eva02_det_to_mmapt.py',
        str(path),
        str(out), '--ema'
    ],
                    check=False)
    assert fail.returncode == 1 and "no 'ema_state'" in fail.stderr


# ------------------------------------------------------ test-time rules
def _d2_decode(boxes, deltas, weights, height, width):
    """detectron2's Box2BoxTransform.apply_deltas + clip."""
    wx, wy, ww, wh = weights
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = (deltas[:, 2] / ww).clamp(max=SCALE_CLAMP)
    dh = (deltas[:, 3] / wh).clamp(max=SCALE_CLAMP)
    pcx, pcy = dx * w + cx, dy * h + cy
    pw, ph = torch.exp(dw) * w, torch.exp(dh) * h
    out = torch.stack(
        [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out


def _iou(box, boxes):
    x1 = torch.maximum(box[0], boxes[:, 0])
    y1 = torch.maximum(box[1], boxes[:, 1])
    x2 = torch.minimum(box[2], boxes[:, 2])
    y2 = torch.minimum(box[3], boxes[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


def _linear_soft_nms(boxes, scores, iou_thr=0.6, min_score=1e-3):
    """Linear soft-NMS: take the best, multiply the others' scores by
    (1 - IoU) where IoU >= iou_thr, drop those below min_score; no cap."""
    boxes, scores = boxes.clone(), scores.clone()
    kept = []
    while len(scores):
        best = int(scores.argmax())
        kept.append((boxes[best], scores[best]))
        rest = torch.ones(len(scores), dtype=torch.bool)
        rest[best] = False
        boxes, scores = boxes[rest], scores[rest]
        if not len(scores):
            break
        iou = _iou(kept[-1][0], boxes)
        scores = torch.where(iou >= iou_thr, scores * (1 - iou), scores)
        alive = scores >= min_score
        boxes, scores = boxes[alive], scores[alive]
    return kept


def _reference_detections(roi_head, feats, proposals, size):
    """Cascade inference by detectron2's rules: per-stage softmax
    probabilities averaged, boxes refined by each stage's weights, clipped,
    never filtered; per-class linear soft-NMS, IoU 0.6, scores > 0."""
    boxes, probs = proposals, []
    for k in range(3):
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1)
        extractor = roi_head.bbox_roi_extractor[k]
        cls, reg = roi_head.bbox_head[k](extractor(feats[:4], rois))
        probs.append(F.softmax(cls, -1))
        boxes = _d2_decode(boxes, reg, STAGE_WEIGHTS[k], *size)
    scores = torch.stack(probs).mean(0)[:, :-1]
    dets, decayed = [], 0
    for label in range(scores.shape[1]):
        valid = scores[:, label] > 0
        raw = scores[valid, label]
        for box, score in _linear_soft_nms(boxes[valid], raw):
            dets.append((label, float(score), box))
            decayed += int(not bool((raw == score).any()))
    return sorted(dets, key=lambda d: (d[0], -d[1])), decayed


def _random_inputs(seed=0, num=150, size=256):
    """Random features; proposals: a third scattered, the rest in clusters
    of ten jittered copies (overlaps that soft-NMS decays)."""
    gen = torch.Generator().manual_seed(seed)
    feats = tuple(
        torch.randn(1, 32, size // s, size // s, generator=gen)
        for s in (4, 8, 16, 32, 64))
    xy = torch.rand(num, 2, generator=gen) * (size - 40)
    wh = torch.rand(num, 2, generator=gen) * 120 + 8
    clustered = torch.arange(num) >= num // 3
    centre = (torch.arange(num) // 10) * 10
    jitter = torch.randn(num, 4, generator=gen) * 3
    proposals = torch.cat([xy, xy + wh], 1)
    proposals[clustered] = proposals[centre[clustered]] + jitter[clustered]
    proposals = proposals.clamp(0, size)
    meta = dict(
        img_shape=(size, size),
        ori_shape=(size, size),
        scale_factor=(1., 1.),
        pad_shape=(size, size))
    return feats, proposals, meta


def _predict(roi_head, feats, proposals, meta):
    with torch.no_grad():
        return roi_head.predict_bbox(
            feats, [meta], [InstanceData(bboxes=proposals)],
            rcnn_test_cfg=roi_head.test_cfg,
            rescale=False)[0]


def test_stage_probabilities_and_soft_nms_equal_detectron2_rules(converted):
    model = converted[-1]
    feats, proposals, meta = _random_inputs()
    with torch.no_grad():
        want, decayed = _reference_detections(model.roi_head, feats, proposals,
                                              (256, 256))
    got = _predict(model.roi_head, feats, proposals, meta)
    order = sorted(
        range(len(got)),
        key=lambda i: (int(got.labels[i]), -float(got.scores[i])))
    # No per-image cap: more than 100 detections survive.
    assert len(want) > 100
    assert len(got) == len(want)
    for i, (label, score, box) in zip(order, want):
        assert int(got.labels[i]) == label
        assert float(got.scores[i]) == pytest.approx(score, abs=1e-5)
        torch.testing.assert_close(got.bboxes[i], box, atol=1e-3, rtol=0)
    # Soft-NMS decayed (and kept) some scores, and dropped some boxes.
    assert decayed > 10
    assert len(want) < 3 * len(proposals)


def test_stock_logit_average_differs(converted):
    """The reference above can fail: mmdet's logit average gives other
    scores on the same inputs."""
    model = converted[-1]
    feats, proposals, meta = _random_inputs(seed=1, num=40)
    probs = _predict(model.roi_head, feats, proposals, meta)
    model.roi_head.score_average = 'logits'
    try:
        logits = _predict(model.roi_head, feats, proposals, meta)
    finally:
        model.roi_head.score_average = 'probs'
    top_p = probs.scores.sort(descending=True).values[:20]
    top_l = logits.scores.sort(descending=True).values[:20]
    assert not torch.allclose(top_p, top_l, atol=1e-4)


def test_maskness_rescores_mask_scores_only(converted):
    model = converted[-1]
    feats, proposals, meta = _random_inputs(seed=2, num=30)
    dets = _predict(model.roi_head, feats, proposals, meta)
    boxes, labels = dets.bboxes.clone(), dets.labels.clone()
    scores = dets.scores.clone()
    with torch.no_grad():
        out = model.roi_head.predict_mask(
            feats, [meta], [dets], rescale=False)[0]
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1)
        logits = model.roi_head.mask_head[0](
            model.roi_head.mask_roi_extractor[0](feats[:4], rois))
    probs = logits.sigmoid()[torch.arange(len(labels)), labels]
    want = []
    for p, s in zip(probs, scores):
        above = p[p > 0.5]
        want.append(float(s) * (float(above.mean()) if len(above) else 0.))
    torch.testing.assert_close(out.scores, scores)  # bbox AP: plain scores
    torch.testing.assert_close(
        out.mask_scores, torch.tensor(want), atol=1e-6, rtol=1e-5)
    assert out.masks.shape == (len(labels), 256, 256)
    assert not torch.allclose(out.mask_scores, out.scores)


def test_shared_mask_head_is_trained_on_the_first_stage_only(converted):
    from mmdet.structures import DetDataSample
    model = converted[-1]
    model.train()
    try:
        feats, proposals, meta = _random_inputs(seed=3, num=64)
        sample = DetDataSample(metainfo=meta)
        masks = torch.zeros(2, 256, 256, dtype=torch.bool)
        masks[0, 20:100, 30:90] = True
        masks[1, 120:200, 100:220] = True
        from mmdet.structures.mask import BitmapMasks
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[30., 20., 90., 100.],
                                 [100., 120., 220., 200.]]),
            labels=torch.tensor([0, 2]),
            masks=BitmapMasks(masks.numpy(), 256, 256))
        losses = model.roi_head.loss(feats, [InstanceData(bboxes=proposals)],
                                     [sample])
    finally:
        model.eval()
    assert 's0.loss_mask' in losses
    assert not any(
        k.startswith(('s1.loss_mask', 's2.loss_mask')) for k in losses)
    assert 's2.loss_cls' in losses


def test_roi_levels_follow_detectron2():
    from mmapt.models.roi_heads import D2RoIExtractor
    extractor = D2RoIExtractor(
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
        out_channels=8,
        featmap_strides=[4, 8, 16, 32])
    sides = torch.tensor(
        [4., 50., 111.9, 112., 150., 223.99, 224., 300., 447.9, 448., 1000.])
    rois = torch.zeros(len(sides), 5)
    rois[:, 3] = sides
    rois[:, 4] = sides
    want = [
        min(max(math.floor(4 + math.log2(s / 224 + 1e-8)), 2), 5) - 2
        for s in sides.tolist()
    ]
    assert extractor.map_roi_levels(rois, 4).tolist() == want
    with pytest.raises(ValueError, match='power-of-two'):
        D2RoIExtractor(
            roi_layer=dict(type='RoIAlign', output_size=7),
            out_channels=8,
            featmap_strides=[4, 8, 32])


# ----------------------------------------- the no-merge invariant, end to end
def test_converted_apt_without_merging_detects_like_the_baseline(converted):
    """A converted release, run as APT with every threshold -1, gives the
    baseline's detections (boxes, scores, labels, masks)."""
    from mmdet.structures import DetDataSample
    _, state, _, _, baseline = converted
    apt = build_detector('apt_vitdet_coco.py',
                         **{'model.backbone.thresholds': (-1., -1., -1.)})
    result = apt.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(
        k.startswith('backbone.apt_embed.') for k in result.missing_keys)
    gen = torch.Generator().manual_seed(4)
    image = (torch.rand(3, 192, 256, generator=gen) * 255).round()
    image[:, :96, :128] = 90.  # flat region: would merge with thresholds
    data = dict(
        inputs=[image],
        data_samples=[
            DetDataSample(
                metainfo=dict(
                    img_shape=(192, 256),
                    ori_shape=(192, 256),
                    scale_factor=(1., 1.)))
        ])
    outs = []
    for model in (baseline, apt):
        with torch.no_grad():
            outs.append(model.test_step(data)[0].pred_instances)
    want, got = outs
    assert len(want) > 10 and len(got) == len(want)
    torch.testing.assert_close(got.scores, want.scores, atol=1e-5, rtol=0)
    assert torch.equal(got.labels, want.labels)
    torch.testing.assert_close(got.bboxes, want.bboxes, atol=1e-3, rtol=0)
    assert (got.masks != want.masks).float().mean() < 1e-3
    torch.testing.assert_close(
        got.mask_scores, want.mask_scores, atol=1e-5, rtol=0)


def test_coco_metric_scores_boxes_plainly_and_masks_with_maskness(tmp_path):
    """One evaluation gives both released numbers: mmdet's CocoMetric ranks
    boxes by ``scores`` and masks by ``mask_scores`` (with the configs'
    maxDets of 100)."""
    import json

    from mmdet.evaluation import CocoMetric
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10:30, 10:30] = True
    ann = dict(
        images=[dict(id=1, width=64, height=64, file_name='a.png')],
        categories=[dict(id=1, name='thing')],
        annotations=[
            dict(
                id=1,
                image_id=1,
                category_id=1,
                bbox=[10, 10, 20, 20],
                area=400,
                iscrowd=0,
                segmentation=[[10, 10, 30, 10, 30, 30, 10, 30]])
        ])
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(json.dumps(ann))
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'eva02_vitdet_coco.py'))
    evaluator = dict(cfg.test_evaluator)
    evaluator.pop('type')
    evaluator.update(ann_file=str(ann_file), backend_args=None)
    metric = CocoMetric(**evaluator)
    metric.dataset_meta = dict(classes=('thing', ))
    wrong = torch.zeros(64, 64, dtype=torch.bool)
    wrong[40:60, 40:60] = True
    pred = InstanceData(
        bboxes=torch.tensor([[40., 40., 60., 60.], [10., 10., 30., 30.]]),
        # The wrong box scores higher, the right mask higher.
        scores=torch.tensor([0.9, 0.5]),
        mask_scores=torch.tensor([0.1, 0.45]),
        labels=torch.tensor([0, 0]),
        masks=torch.stack([wrong, mask]))
    metric.process({},
                   [dict(pred_instances=pred, img_id=1, ori_shape=(64, 64))])
    results = metric.evaluate(1)
    assert results['coco/bbox_mAP'] == pytest.approx(0.5, abs=0.01)
    assert results['coco/segm_mAP'] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize('name', [
    'eva02_vitdet_coco.py', 'eva02_vitdet_coco_large.py', 'apt_vitdet_coco.py',
    'apt_vitdet_coco_large.py', 'apt_vitdet_coco_finetune.py',
    'apt_vitdet_coco_large_finetune.py', 'eva02_vitdet_coco_large_o365.py',
    'eva02_vitdet_coco_1024.py', 'eva02_vitdet_coco_large_1024.py'
])
def test_coco_configs_carry_detectron2_rules(name):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', name))
    model = cfg.model
    roi = model.roi_head
    assert (roi.type, roi.score_average,
            roi.shared_mask_head) == ('D2CascadeRoIHead', 'probs', True)
    assert roi.bbox_roi_extractor.type == roi.mask_roi_extractor.type == \
        'D2RoIExtractor'
    for head, weights in zip(roi.bbox_head, STAGE_WEIGHTS):
        assert head.bbox_coder.target_stds == pytest.approx(
            [1 / w for w in weights])
        assert head.reg_class_agnostic
    assert model.rpn_head.anchor_generator.center_offset == 0
    rpn = model.test_cfg.rpn
    assert (rpn.nms_pre, rpn.max_per_img, rpn.nms.iou_threshold,
            rpn.min_bbox_size) == (1000, 1000, 0.7, 0)
    assert model.backbone.pos_embed_grid == 14
    rcnn = model.test_cfg.rcnn
    if '1024' in name:  # detectron2's defaults
        want = (0.05, dict(type='nms', iou_threshold=0.5), 100, None)
    else:  # bounded soft-NMS
        want = (0.05,
                dict(
                    type='soft_nms',
                    iou_threshold=0.6,
                    min_score=1e-3,
                    method='linear'), 100, 0.5)
    assert (rcnn.score_thr, rcnn.nms, rcnn.max_per_img,
            rcnn.maskness_thr) == want
    # tools/test.py --released-scoring: the released 1536 numbers' overrides.
    from mmapt.engine.released import apply_released_test_cfg
    apply_released_test_cfg(cfg, name)
    rcnn = cfg.model.test_cfg.rcnn
    if '1024' not in name:
        want = (0.0, want[1], -1, 0.5)
    assert (rcnn.score_thr, rcnn.nms, rcnn.max_per_img,
            rcnn.maskness_thr) == want
    assert tuple(cfg.test_evaluator.proposal_nums) == (1, 10, 100)
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert pipeline[0].imdecode_backend == 'pillow'
    assert pipeline[1].backend == 'pillow'
    size = 1024 if '1024' in name else 1536
    assert tuple(pipeline[1].scale) == (size, size)
    assert model.backbone.img_size == size
    if 'finetune' in name:
        assert cfg.load_from.startswith('checkpoints/eva02_')


def test_released_scoring_needs_a_released_config():
    from mmapt.engine.released import apply_released_test_cfg
    cfg = Config(dict(model=dict(test_cfg=dict(rcnn=dict(score_thr=0.3)))))
    with pytest.raises(ValueError, match='released_test_cfg'):
        apply_released_test_cfg(cfg, 'x.py')


def test_test_tool_has_the_released_scoring_flag():
    from conftest import run_tool
    proc = run_tool(['tools/test.py', '--help'])
    assert '--released-scoring' in proc.stdout


def test_test_pipeline_resizes_like_detectron2(tmp_path):
    """Decode and resize of the COCO test pipeline equal detectron2's
    reader: PIL decode, long side to 1536, PIL bilinear."""
    import numpy as np
    from mmcv.transforms import Compose
    from PIL import Image
    init_default_scope('mmdet')
    import mmdet.datasets  # noqa: F401  (registers the transforms)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'eva02_vitdet_coco.py'))
    path = str(tmp_path / 'photo.jpg')
    pixels = np.random.RandomState(0).randint(0, 256, (300, 400, 3))
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    pipeline = Compose(
        [t for t in cfg.test_pipeline if t['type'] != 'LoadAnnotations'])
    out = pipeline(dict(img_path=path, img_id=0))
    ours = out['inputs'].permute(1, 2, 0).numpy()[:, :, ::-1]  # BGR -> RGB
    want = np.asarray(
        Image.open(path).convert('RGB').resize((1536, 1152), Image.BILINEAR))
    assert ours.shape == want.shape
    assert np.array_equal(ours, want)
    assert out['data_samples'].metainfo['scale_factor'] == (3.84, 3.84)
