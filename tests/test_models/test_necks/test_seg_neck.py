"""Tests of ViTPyramidNeck (the UperNet pyramid from stride-16 ViT maps)."""
import pytest
import torch

pytest.importorskip('mmcv')

from mmengine.registry import MODELS  # noqa: E402

import mmapt.models.necks.ln2d  # noqa: E402,F401  (registers LN2d)
from mmapt.models.necks.vit_pyramid import ViTPyramidNeck  # noqa: E402


def _inputs(n=4, batch=2, dim=32, h=6, w=10):
    return [torch.randn(batch, dim, h, w) for _ in range(n)]


def test_default_pyramid_shapes_and_registry():
    neck = MODELS.build(dict(type='ViTPyramidNeck', embed_dim=32))
    outs = neck(_inputs())
    assert [tuple(o.shape) for o in outs] == [(2, 32, 24, 40), (2, 32, 12, 20),
                                              (2, 32, 6, 10), (2, 32, 3, 5)]


def test_default_norm_is_ln2d_not_batchnorm():
    neck = ViTPyramidNeck(embed_dim=16)
    kinds = {type(m).__name__ for m in neck.modules()}
    assert 'LN2d' in kinds
    assert not any('BatchNorm' in k for k in kinds)
    # one sample of batch 1 works (a BN in train mode would fail on 1x1)
    neck.train()
    outs = neck([torch.randn(1, 16, 1, 1)
                 for _ in range(3)] + [torch.randn(1, 16, 2, 2)])
    assert outs[0].shape[-2:] == (4, 4)


def test_stride4_level_is_two_deconvs_with_norm_between():
    neck = ViTPyramidNeck(
        embed_dim=8,
        norm_cfg=dict(type='GN', num_groups=4),
        act_cfg=dict(type='ReLU'))
    level = neck.levels[0]
    names = [type(m).__name__ for m in level]
    assert names == ['ConvTranspose2d', 'GroupNorm', 'ReLU', 'ConvTranspose2d']
    assert [type(m).__name__ for m in neck.levels[1]] == ['ConvTranspose2d']
    assert isinstance(neck.levels[2], torch.nn.Identity)
    assert isinstance(neck.levels[3], torch.nn.MaxPool2d)


def test_values_identity_and_maxpool_levels():
    neck = ViTPyramidNeck(embed_dim=4)
    xs = _inputs(dim=4, h=4, w=4)
    outs = neck(xs)
    assert torch.equal(outs[2], xs[2])
    assert torch.equal(outs[3], torch.nn.functional.max_pool2d(xs[3], 2))


def test_custom_rescales_and_gradients():
    neck = ViTPyramidNeck(embed_dim=8, rescales=(8, 0.25))
    xs = [torch.randn(1, 8, 4, 4, requires_grad=True) for _ in range(2)]
    outs = neck(xs)
    assert outs[0].shape[-2:] == (32, 32)
    assert outs[1].shape[-2:] == (1, 1)
    sum(o.sum() for o in outs).backward()
    assert all(x.grad is not None for x in xs)


@pytest.mark.parametrize('rescales', [(3, 1), (0, 1), (-2, 1), ()])
def test_bad_rescales_raise(rescales):
    with pytest.raises(ValueError, match='rescale'):
        ViTPyramidNeck(embed_dim=8, rescales=rescales)


def test_wrong_number_of_inputs_names_out_indices():
    neck = ViTPyramidNeck(embed_dim=8)
    with pytest.raises(ValueError, match='out_indices'):
        neck(_inputs(n=3, dim=8))


def test_wrong_channels_names_embed_dim():
    neck = ViTPyramidNeck(embed_dim=8)
    with pytest.raises(ValueError, match='embed_dim'):
        neck(_inputs(n=4, dim=16))
