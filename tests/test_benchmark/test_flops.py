"""mmapt.benchmark.flops counts the attention of every block family (dense and
packed), here the DINOv2 baseline ViT and its APT version."""
import pytest
import torch
from torch import nn

from mmapt.benchmark.flops import count_flops
from mmapt.models import APTViT, ViT

ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)
# 4 registers + class token; block 0 windowed (4 x 4), block 1 global.
CFG = dict(
    arch=ARCH,
    img_size=112,
    patch_size=14,
    pretrain_img_size=112,
    num_register_tokens=4,
    window_size=4,
    global_attn_indexes=(1, ))


class Wrapper(nn.Module):
    """count_flops finds the backbone by its name."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(x)


def _flops(backbone, x):
    model = Wrapper(backbone.eval())
    with torch.no_grad(), count_flops(model) as flops:
        model(x)
    return flops


def _expected_attention(batch, grid, prefix, window, channels=32):
    """4 * L**2 * C per attended group: block 0 a prefix group and the
    windows (partial ones padded to whole windows), block 1 whole images."""
    rows, cols = -(-grid[0] // window), -(-grid[1] // window)
    windows = batch * (rows * cols * window**4 + prefix**2)
    images = batch * (prefix + grid[0] * grid[1])**2
    return 4 * channels * (windows + images)


@pytest.mark.parametrize('size', [(112, 112), (84, 112)])
def test_dinov2_vit_attention_is_counted(size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    grid = (size[0] // 14, size[1] // 14)
    flops = _flops(ViT(**CFG), x)
    assert flops['attention'] == _expected_attention(2, grid, 5, 4)
    assert flops['backbone'] > flops['attention'] > 0


def test_apt_vit_without_merging_counts_the_same_attention():
    """Packed groups (APT, nothing merged) and dense windows / images are
    the same groups: the same attention FLOPs."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 112, 112)
    plain = _flops(ViT(**CFG), x)
    apt = _flops(APTViT(thresholds=(-1, -1), **CFG), x)
    assert apt['attention'] == plain['attention']
