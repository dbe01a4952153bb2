"""BaseViT and the APT host contract: EVA02 and ViT are siblings on one
base, both satisfy APTHost, APT arguments reach the adapter directly."""
import pytest
import torch
from torch import nn

from mmapt.models import APTEVA02, EVA02, APTViT, ViT
from mmapt.models.apt import APTAdapter, APTHost, missing_host_members
from mmapt.models.backbones import BaseViT
from mmapt.models.layers import APTEmbed

ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)
EVA = dict(arch=ARCH, img_size=64)
DINO = dict(
    arch=ARCH, img_size=56, pretrain_img_size=56, num_register_tokens=4)


@pytest.mark.parametrize('cls, cfg', [(EVA02, EVA), (ViT, DINO),
                                      (APTEVA02, EVA), (APTViT, DINO)])
def test_every_backbone_is_an_apt_host(cls, cfg):
    model = cls(**cfg)
    assert isinstance(model, APTHost) and isinstance(model, BaseViT)
    assert missing_host_members(model) == []


def test_families_are_siblings_and_name_only_their_parts():
    assert EVA02 not in ViT.__mro__ and ViT not in EVA02.__mro__
    assert EVA02.embedding_names == ViT.embedding_names == \
        BaseViT.embedding_names
    assert 'apt_embed' not in BaseViT.embedding_names
    eva, vit = EVA02(**EVA), ViT(**DINO)
    assert eva.rope is not None and vit.rope is None
    assert eva.register_tokens is None and eva.num_prefix_tokens == 0
    # Prefix tokens are decided at build time: class token + 4 registers.
    assert vit.num_prefix_tokens == 5
    assert vit.prefix_tokens(3).shape == (3, 5, 32)


def test_not_a_host_is_named():
    with pytest.raises(TypeError, match=r'Linear cannot host APT.*patch_size'):
        APTAdapter(nn.Linear(2, 2), APTEmbed(2))


def test_apt_arguments_go_to_the_adapter_not_the_module():
    assert {'thresholds', 'entropy_bins', 'mean',
            'std'} <= set(APTAdapter.arg_names())
    model = APTViT(thresholds=(3., -1), entropy_bins=64, **DINO)
    assert model.tokenizer.thresholds == (3., -1.)
    assert model.tokenizer.entropy_bins == 64
    assert model.tokenizer.num_prefix_tokens == 5
    assert model.apt.apt_embed is model.apt_embed
    assert not hasattr(model, '_apt_args')
    with pytest.raises(TypeError, match='thresholdz'):
        APTViT(thresholdz=(2, ), **DINO)


def test_layer_depth_and_freezing_follow_embedding_names():
    model = APTViT(frozen_stages=1, thresholds=(2., 2.), **DINO)
    depth = model.get_layer_depth
    for name in ('patch_embed.proj.weight', 'pos_embed', 'cls_token',
                 'register_tokens', 'apt_embed.aggregate.weight'):
        assert depth('backbone.' + name) == (0, 4)
    assert depth('backbone.blocks.1.attn.qkv.weight') == (2, 4)
    assert depth('backbone.other') == (3, 4)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {
        'pos_embed', 'cls_token', 'register_tokens',
        'apt_embed.zero_linear.weight'
    } <= frozen
    assert not any(n.startswith('blocks.1.') for n in frozen)
    assert all(
        n.startswith(('blocks.0.', 'patch_embed',
                      'apt_embed')) or n in ('pos_embed', 'cls_token',
                                             'register_tokens')
        for n in frozen)
    assert not model.apt_embed.training and model.blocks[1].training


def test_dense_forward_drops_prefix_tokens_and_orders_outputs():
    torch.manual_seed(0)
    model = ViT(out_indices=(1, 0), **DINO).eval()
    other = ViT(out_indices=(0, 1), **DINO).eval()
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 56, 42)
    with torch.no_grad():
        late, early = model(x)
        first, second = other(x)
    assert late.shape == early.shape == (2, 32, 4, 3)
    assert torch.equal(late, second) and torch.equal(early, first)
    assert not torch.allclose(late, early)
