"""A third ViT family gets APT from BaseViT + APTBackboneMixin alone: a plain
ViT with learned absolute positions, no prefix tokens, global attention
(the recipe of docs/design.md, "Add APT to your ViT")."""
import torch
import torch.nn.functional as F
from conftest import flat_and_noise_images
from torch import nn

from mmapt.models.apt import APTBackboneMixin, APTHost
from mmapt.models.backbones import BaseViT, count_tokens
from mmapt.models.layers import SelfAttentionBase


# ---------------------------------------- the third host: under 60 lines
class PlainAttention(SelfAttentionBase):

    def __init__(self, dims, heads):
        super().__init__()
        self.heads, self.qkv = heads, nn.Linear(dims, 3 * dims)

    def forward(self, x, rope=None, key_mask=None):  # dense (B, L, C)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(
            2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1,
                                                                 2).flatten(2)

    def forward_packed(self, x, groups):  # packed (N, C)
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(1)
        return groups.attend(q, k, v).flatten(1)


class PlainBlock(nn.Module):
    window_size = 0  # global attention only

    def __init__(self, dims, heads):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dims), nn.LayerNorm(dims)
        self.attn = PlainAttention(dims, heads)
        self.mlp = nn.Sequential(
            nn.Linear(dims, 2 * dims), nn.GELU(), nn.Linear(2 * dims, dims))

    def forward(self, x, ctx):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_packed(self, x, ctx):
        x = x + self.attn.forward_packed(self.norm1(x), ctx.groups(0))
        return x + self.mlp(self.norm2(x))


class PlainViT(BaseViT):
    arch_zoo = {'tiny': dict(embed_dims=32, num_layers=2, num_heads=2)}

    def __init__(self, **kwargs):
        super().__init__(
            arch='tiny', img_size=64, patch_size=8, pos_embed_grid=8, **kwargs)

    def build_blocks(self, drop_rates):
        return nn.ModuleList(
            PlainBlock(self.embed_dims, 2) for _ in drop_rates)


class APTPlainViT(APTBackboneMixin, PlainViT):
    """PlainViT with APT tokens."""


# ------------------------------------------------------------------------


def _pair(thresholds):
    torch.manual_seed(0)
    plain = PlainViT(out_indices=(0, 1)).eval()
    apt = APTPlainViT(thresholds=thresholds, out_indices=(0, 1)).eval()
    missing = apt.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith('apt_embed.') for k in missing.missing_keys)
    with torch.no_grad():  # trained-like APT layers
        apt.apt_embed.zero_linear.weight.normal_(std=0.05)
    return plain, apt


def test_third_host_satisfies_the_protocol():
    plain, apt = _pair((-1, -1))
    assert isinstance(plain, APTHost) and isinstance(apt, APTHost)
    assert plain.num_prefix_tokens == 0 and plain.rope is None


def test_third_host_without_merging_equals_its_plain_forward():
    plain, apt = _pair((-1, -1))
    x = flat_and_noise_images(2, 64, 64, flat=(32, 32))
    with torch.no_grad():
        for want, got in zip(plain(x), apt(x)):
            assert got.shape == (2, 32, 8, 8)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_third_host_merges_and_returns_maps_of_the_base_grid():
    _, apt = _pair((5.0, 5.0))
    x = flat_and_noise_images(2, 64, 64, flat=(32, 32))
    with torch.no_grad(), count_tokens(apt) as counter:
        outs = apt(x)
    assert [o.shape for o in outs] == [(2, 32, 8, 8)] * 2
    assert bool(torch.isfinite(outs[1]).all())
    stats = counter.per_image()
    assert bool((stats['tokens'] < 64).all())  # the flat part merged
    assert stats['baseline_tokens'].tolist() == [64, 64]
