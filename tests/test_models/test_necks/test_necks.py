"""SimpleFPN and LN2d."""
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('mmcv')
from mmcv.cnn import build_norm_layer  # noqa: E402
from mmengine.registry import MODELS  # noqa: E402

import mmapt.models.necks  # noqa: E402,F401
from mmapt.models.necks import LN2d, SimpleFPN  # noqa: E402


def test_ln2d_matches_layer_norm_over_channels():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7) * 3 + 1
    ln = LN2d(8, eps=1e-6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    expected = F.layer_norm(
        x.permute(0, 2, 3, 1), (8, ), ln.weight, ln.bias,
        eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), expected, rtol=1e-5, atol=1e-5)
    # Contiguous NCHW: mmcv's CPU RoIAlign reads the buffer as NCHW.
    assert ln(x).is_contiguous()


def test_ln2d_from_norm_cfg_and_errors():
    name, layer = build_norm_layer(dict(type='LN2d', eps=1e-6), 16)
    assert isinstance(layer, LN2d) and name == 'ln'
    assert layer.eps == 1e-6
    assert MODELS.get('LN2d') is LN2d
    with pytest.raises(ValueError, match=r'\(B, 16, H, W\)'):
        layer(torch.zeros(1, 8, 4, 4))


def test_simple_fpn_shapes_norms_and_gradients():
    fpn = MODELS.build(
        dict(
            type='SimpleFPN',
            backbone_channel=32,
            in_channels=[8, 16, 32, 32],
            out_channels=16,
            num_outs=5,
            norm_cfg=dict(type='LN2d', eps=1e-6)))
    assert isinstance(fpn, SimpleFPN)
    assert isinstance(fpn.fpn1[1], LN2d)
    assert all(isinstance(m.norm, LN2d) for m in fpn.lateral_convs)
    # Conv + norm: the conv has no bias (mmcv's bias='auto').
    assert fpn.fpn_convs[0].conv.bias is None
    x = torch.randn(2, 32, 8, 12, requires_grad=True)
    outs = fpn((x, ))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 32, 48), (2, 16, 16, 24),
                                              (2, 16, 8, 12), (2, 16, 4, 6),
                                              (2, 16, 2, 3)]
    assert all(o.is_contiguous() for o in outs)
    sum(o.sum() for o in outs).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert fpn.fpn1[0].weight.grad.abs().sum() > 0


def test_simple_fpn_uses_last_input_and_no_norm():
    fpn = SimpleFPN(16, [4, 8, 16, 16], 8, num_outs=4, norm_cfg=None)
    assert isinstance(fpn.fpn1[1], torch.nn.Identity)
    assert fpn.fpn_convs[0].conv.bias is not None
    early = torch.randn(1, 16, 4, 4)
    late = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(fpn((early, late))[2], fpn((late, ))[2])
    assert len(fpn((late, ))) == 4


def test_simple_fpn_rejects_bad_channels():
    with pytest.raises(ValueError, match=r'\[C//4, C//2, C, C\]'):
        SimpleFPN(32, [8, 16, 32, 16], 16, num_outs=5)
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(32, [8, 16, 32, 32], 16, num_outs=3)
    fpn = SimpleFPN(32, [8, 16, 32, 32], 16, num_outs=5)
    with pytest.raises(ValueError, match='32 input channels'):
        fpn((torch.zeros(1, 16, 4, 4), ))
