"""The block families' state-dict keys, in order: the contract with the
official / timm checkpoints, the converters and saved checkpoints, kept
while both families share :class:`PreNormBlock`."""
import pytest
import torch

from mmapt.models.layers import DenseContext, EVA02Block, ViTBlock
from mmapt.models.layers.common import PreNormBlock


def _keys(block):
    return [(k, tuple(v.shape)) for k, v in block.state_dict().items()]


def test_eva02_block_keys_in_checkpoint_order():
    block = EVA02Block(8, 2, 12, scale_mlp=True, attn_inner_norm=True)
    assert isinstance(block, PreNormBlock)
    assert _keys(block) == [('norm1.weight', (8, )), ('norm1.bias', (8, )),
                            ('attn.q_bias', (8, )), ('attn.v_bias', (8, )),
                            ('attn.qkv.weight', (24, 8)),
                            ('attn.norm.weight', (8, )),
                            ('attn.norm.bias', (8, )),
                            ('attn.proj.weight', (8, 8)),
                            ('attn.proj.bias', (8, )), ('norm2.weight', (8, )),
                            ('norm2.bias', (8, )), ('mlp.w12.weight', (24, 8)),
                            ('mlp.w12.bias', (24, )),
                            ('mlp.norm.weight', (12, )),
                            ('mlp.norm.bias', (12, )),
                            ('mlp.w3.weight', (8, 12)), ('mlp.w3.bias', (8, ))]
    plain = EVA02Block(8, 2, 12)
    assert [k for k, _ in _keys(plain)] == [
        'norm1.weight', 'norm1.bias', 'attn.q_bias', 'attn.v_bias',
        'attn.qkv.weight', 'attn.proj.weight', 'attn.proj.bias',
        'norm2.weight', 'norm2.bias', 'mlp.w12.weight', 'mlp.w12.bias',
        'mlp.w3.weight', 'mlp.w3.bias'
    ]


def test_vit_block_keys_in_checkpoint_order():
    block = ViTBlock(8, 2, 12, layer_scale_init=0.5)
    assert _keys(block) == [('norm1.weight', (8, )), ('norm1.bias', (8, )),
                            ('attn.qkv.weight', (24, 8)),
                            ('attn.qkv.bias', (24, )),
                            ('attn.proj.weight', (8, 8)),
                            ('attn.proj.bias', (8, )), ('norm2.weight', (8, )),
                            ('norm2.bias', (8, )), ('mlp.fc1.weight', (12, 8)),
                            ('mlp.fc1.bias', (12, )),
                            ('mlp.fc2.weight', (8, 12)),
                            ('mlp.fc2.bias', (8, )), ('ls1.gamma', (8, )),
                            ('ls2.gamma', (8, ))]
    assert torch.equal(block.ls1.gamma, torch.full((8, ), 0.5))
    no_scale = ViTBlock(8, 2, 12, layer_scale_init=None)
    assert [k for k, _ in _keys(no_scale)
            ] == [k for k, _ in _keys(block) if not k.startswith('ls')]


def test_layer_scale_scales_both_branches():
    """LayerScale 0 silences both residual branches: the block returns its
    input; a non-zero ``ls2`` lets the MLP branch through."""
    block = ViTBlock(8, 2, 12, layer_scale_init=0.).eval()
    x = torch.randn(2, 1 + 3 * 4, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x, DenseContext((3, 4), 1)), x)
        block.ls2.gamma.fill_(1.)
        assert not torch.allclose(block(x, DenseContext((3, 4), 1)), x)


def test_heads_must_divide_the_channels():
    for block in (EVA02Block, ViTBlock):
        with pytest.raises(ValueError, match='embed_dims 10 is not divisible'):
            block(10, 3, 12)
