"""LayerDecayOptimWrapperConstructor: per-layer lr from the backbone's
get_layer_depth, weight decay exclusions, mmdet- and mmseg-style models."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

import mmapt.engine  # noqa: F401
from mmapt.engine import LayerDecayOptimWrapperConstructor
from mmapt.models import EVA02

BASE_LR = 1e-3
WD = 0.1
RATE = 0.5


class Detector(nn.Module):
    """A stand-in for an mmdet detector / mmseg segmentor: `backbone` plus
    a head outside it."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Sequential(nn.Conv2d(32, 8, 1), nn.LayerNorm(8))


class Wrapper(nn.Module):
    """A DDP-like wrapper (the constructor unwraps `.module`)."""

    def __init__(self, module):
        super().__init__()
        self.module = module


class OtherBackbone(nn.Module):
    """Not an EVA02: only the get_layer_depth contract matters."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.stages = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))

    def get_layer_depth(self, name, prefix='backbone.'):
        name = name[len(prefix):]
        if name.startswith(('stem', 'pos_embed')):
            return 0, 4
        if name.startswith('stages.'):
            return int(name.split('.')[1]) + 1, 4
        return 3, 4


def small_eva02():
    return EVA02(
        arch=dict(embed_dims=32, num_layers=3, num_heads=2), img_size=64)


def build(model, **paramwise):
    paramwise.setdefault('layer_decay_rate', RATE)
    return build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            constructor='LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=WD),
            paramwise_cfg=paramwise))


def groups_by_param(optim_wrapper):
    found = {}
    for group in optim_wrapper.optimizer.param_groups:
        for name in group['param_names']:
            assert name not in found, f'{name} in two groups'
            found[name] = group
    return found


@pytest.mark.parametrize('wrap', [False, True])
def test_eva02_layer_scales_and_weight_decay(wrap):
    model = Detector(small_eva02())
    optim = build(Wrapper(model) if wrap else model)
    assert isinstance(optim.optimizer, torch.optim.AdamW)
    found = groups_by_param(optim)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(found) == trainable
    num_layers = 3 + 2

    def lr_of(depth):
        return BASE_LR * RATE**(num_layers - 1 - depth)

    for name, group in found.items():
        if name.startswith('backbone.blocks.'):
            depth = int(name.split('.')[2]) + 1
        elif name.startswith(('backbone.patch_embed', 'backbone.pos_embed')):
            depth = 0
        else:  # neck, and backbone parameters outside the blocks
            depth = num_layers - 1
        assert group['lr'] == pytest.approx(lr_of(depth)), name
        assert group['lr_scale'] == pytest.approx(RATE**(num_layers - 1 -
                                                         depth))
    assert found['backbone.patch_embed.proj.weight']['lr'] == pytest.approx(
        BASE_LR * RATE**4)
    assert found['neck.0.weight']['lr'] == pytest.approx(BASE_LR)
    # Weight decay: none on 1-D parameters (norms, biases), nor pos_embed.
    for name, group in found.items():
        param = dict(model.named_parameters())[name]
        no_decay = (
            param.ndim == 1 or name.endswith('.bias')
            or name.endswith('pos_embed'))
        assert group['weight_decay'] == (0.0 if no_decay else WD), name
    assert found['backbone.pos_embed']['weight_decay'] == 0.0
    assert found['neck.1.weight']['weight_decay'] == 0.0
    assert found['backbone.blocks.0.attn.proj.weight']['weight_decay'] == WD
    # The runner logs the lr of the first group: the full one.
    assert optim.optimizer.param_groups[0]['lr'] == pytest.approx(BASE_LR)


def test_any_backbone_with_get_layer_depth_and_frozen_params():
    model = Detector(OtherBackbone())
    model.backbone.stem.bias.requires_grad = False
    found = groups_by_param(build(model))
    assert 'backbone.stem.bias' not in found
    assert found['backbone.stem.weight']['lr'] == pytest.approx(BASE_LR *
                                                                RATE**3)
    assert found['backbone.stages.1.weight']['lr'] == pytest.approx(BASE_LR *
                                                                    RATE)
    assert found['backbone.pos_embed']['weight_decay'] == 0.0


def test_custom_keys_multiply_the_layer_scale():
    model = Detector(small_eva02())
    found = groups_by_param(
        build(
            model, custom_keys={'neck.0': dict(lr_mult=0.1, decay_mult=0.0)}))
    assert found['neck.0.weight']['lr'] == pytest.approx(BASE_LR * 0.1)
    assert found['neck.0.weight']['weight_decay'] == 0.0


def test_training_step_uses_the_groups():
    model = Detector(small_eva02())
    optim = build(model)
    before = model.backbone.blocks[0].attn.proj.weight.detach().clone()
    out = model.backbone(torch.randn(1, 3, 64, 64))[0]
    optim.update_params(model.neck[0](out).pow(2).mean())
    assert not torch.equal(before, model.backbone.blocks[0].attn.proj.weight)


def test_errors_name_the_fix():
    with pytest.raises(KeyError, match='layer_decay_rate'):
        LayerDecayOptimWrapperConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)),
            dict())
    with pytest.raises(KeyError, match='unsupported paramwise_cfg'):
        LayerDecayOptimWrapperConstructor(
            dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3)),
            dict(layer_decay_rate=0.7, decay_rate=0.7))
    with pytest.raises(TypeError, match='get_layer_depth'):
        build(nn.Sequential(nn.Linear(2, 2)))


def test_mmseg_encoder_decoder_from_seg_schedule():
    """The seg configs use the same constructor on an mmseg EncoderDecoder."""
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model = MODELS.build(
        dict(
            type='EncoderDecoder',
            backbone=dict(
                type='EVA02',
                arch=dict(embed_dims=32, num_layers=2, num_heads=2),
                img_size=64),
            decode_head=dict(
                type='FCNHead',
                in_channels=32,
                channels=8,
                num_convs=1,
                num_classes=3,
                norm_cfg=dict(type='LN2d', eps=1e-6))))
    found = groups_by_param(build(model, layer_decay_rate=0.8))
    assert found['decode_head.conv_seg.weight']['lr'] == pytest.approx(BASE_LR)
    assert found['backbone.blocks.0.norm1.weight']['lr'] == pytest.approx(
        BASE_LR * 0.8**2)


def small_apt():
    from mmapt.models import APTEVA02
    return APTEVA02(
        arch=dict(embed_dims=32, num_layers=3, num_heads=2),
        img_size=64,
        thresholds=(2.0, ))


@pytest.mark.parametrize('apt_lr_mult', [None, 0.5])
def test_apt_layers_get_their_own_rule(apt_lr_mult, caplog):
    """apt_embed.* are new layers: base_lr * apt_lr_mult (default 1), not
    the decayed rate of the embedding (depth 0) they sit beside."""
    model = Detector(small_apt())
    assert model.backbone.apt_param_prefixes == ('apt_embed.', )
    paramwise = {} if apt_lr_mult is None else dict(apt_lr_mult=apt_lr_mult)
    found = groups_by_param(build(model, **paramwise))
    mult = 1.0 if apt_lr_mult is None else apt_lr_mult
    apt_names = [n for n in found if n.startswith('backbone.apt_embed.')]
    assert len(apt_names) == 4
    for name in apt_names:
        assert found[name]['lr'] == pytest.approx(BASE_LR * mult), name
        assert found[name]['group_name'].startswith('apt_')
    # Weight decay rules unchanged: none on biases.
    assert found['backbone.apt_embed.zero_linear.bias']['weight_decay'] == 0
    assert found['backbone.apt_embed.zero_linear.weight']['weight_decay'] == WD
    # The pretrained embedding keeps its decayed rate.
    assert found['backbone.patch_embed.proj.weight']['lr'] == pytest.approx(
        BASE_LR * RATE**4)
    # The runner logs the first group's lr: still the neck's full rate.
    assert build(model).optimizer.param_groups[0]['group_name'].startswith(
        'layer_top')


def test_groups_are_logged():
    import logging

    from mmengine.logging import MMLogger

    # The constructor logs to the current (latest) MMLogger.
    logger = MMLogger.get_instance('test_layer_decay_log', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    try:
        build(Detector(small_apt()), apt_lr_mult=1.0)
    finally:
        logger.removeHandler(handler)
    text = '\n'.join(records)
    assert 'apt_lr_mult=1.0' in text
    assert 'apt_decay: lr=1.000e-03' in text
    assert 'layer_0_decay: lr=6.250e-05' in text


def test_apt_lr_mult_is_validated():
    with pytest.raises(ValueError, match='apt_lr_mult'):
        build(Detector(small_apt()), apt_lr_mult=-1)
