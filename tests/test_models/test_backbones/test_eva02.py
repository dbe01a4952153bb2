"""Plain EVA02 backbone: timm parity, windows, training utilities."""
import pytest
import torch

from mmapt.converters import convert_eva02_state_dict
from mmapt.models import EVA02
from mmapt.models.layers import DenseContext, RotaryEmbedding2D
from mmapt.registry import MODELS

timm = pytest.importorskip('timm')

TINY = dict(embed_dims=64, num_layers=3, num_heads=1)


def _randomize(model, seed=0):
    """Non-trivial values everywhere (timm zero-inits biases and norms)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


def _timm_intermediate(model, x, index):
    return model.forward_intermediates(
        x,
        indices=[index],
        norm=False,
        output_fmt='NCHW',
        intermediates_only=True)[0]


def test_timm_parity_tiny():
    torch.manual_seed(0)
    ref = timm.create_model(
        'eva02_tiny_patch14_224', pretrained=False, class_token=False).eval()
    _randomize(ref)
    state, _ = convert_eva02_state_dict(ref.state_dict())
    model = EVA02(
        arch='tiny',
        img_size=224,
        patch_size=14,
        window_size=0,
        out_indices=(11, )).eval()
    model.load_state_dict(state)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        want = _timm_intermediate(ref, x, 11)
    assert len(out) == 1 and out[0].shape == (1, 192, 16, 16)
    torch.testing.assert_close(out[0], want, rtol=0, atol=1e-4)


def test_timm_parity_base_style():
    """Separate q/k/v, MLP norm and inner attention norm (base/large style).

    Small: 2 blocks of width 128 at 112 px (grid 8 = timm's reference grid),
    every block's output compared.
    """
    from timm.models.eva import Eva
    torch.manual_seed(0)
    ref = Eva(
        img_size=112,
        patch_size=14,
        embed_dim=128,
        depth=2,
        num_heads=2,
        qkv_fused=False,
        mlp_ratio=4 * 2 / 3,
        swiglu_mlp=True,
        scale_mlp=True,
        scale_attn_inner=True,
        use_rot_pos_emb=True,
        ref_feat_shape=(8, 8),
        class_token=False,
        num_classes=0).eval()
    _randomize(ref)
    assert 'blocks.0.attn.q_proj.weight' in ref.state_dict()
    assert 'blocks.0.mlp.fc1_g.weight' in ref.state_dict()
    state, _ = convert_eva02_state_dict(ref.state_dict())
    assert 'blocks.0.attn.norm.weight' in state
    assert 'blocks.0.mlp.norm.weight' in state
    arch = dict(
        embed_dims=128,
        num_layers=2,
        num_heads=2,
        scale_mlp=True,
        attn_inner_norm=True)
    model = EVA02(
        arch=arch,
        img_size=112,
        patch_size=14,
        pretrain_img_size=112,
        out_indices=(0, 1)).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = model(x)
        for i in (0, 1):
            torch.testing.assert_close(
                out[i], _timm_intermediate(ref, x, i), rtol=0, atol=1e-4)


def test_rope_matches_timm_tables():
    from timm.layers import RotaryEmbeddingCat
    ref = RotaryEmbeddingCat(
        64, in_pixels=False, feat_shape=[5, 7], ref_feat_shape=[16, 16])
    table = RotaryEmbedding2D(64, 16).grid(5, 7, torch.device('cpu'))
    want_sin, want_cos = ref.get_embed().chunk(2, -1)
    # timm repeats every pair's value twice (interleaved layout); ours
    # folds the rotation's sign into sin: -sin on a pair's first channel.
    sign = torch.tensor([-1., 1.]).repeat(32)
    assert torch.equal(table[:, 0], want_cos)
    assert torch.equal(table[:, 1] * sign, want_sin)


def test_apply_rope_matches_timm_rotation():
    from timm.layers import apply_rot_embed_cat

    from mmapt.models.layers import apply_rope
    torch.manual_seed(0)
    table = RotaryEmbedding2D(64, 16).grid(6, 5, torch.device('cpu'))
    x = torch.randn(2, 3, 30, 64)
    want = apply_rot_embed_cat(
        x,
        torch.cat(
            [table[:, 1] * torch.tensor([-1., 1.]).repeat(32), table[:, 0]],
            -1))
    torch.testing.assert_close(apply_rope(x, table), want, rtol=0, atol=1e-6)
    with torch.no_grad():
        inplace = apply_rope(x.clone(), table, inplace=True)
    torch.testing.assert_close(inplace, want, rtol=0, atol=1e-6)
    half = apply_rope(x.bfloat16(), table)
    assert half.dtype == torch.bfloat16


def test_window_padding_masks_padded_keys():
    """A grid not divisible by the window: padded keys must not count.

    Each window's result must equal the block run on that window's valid
    tokens alone (window-relative RoPE on the full window grid).
    """
    torch.manual_seed(0)
    model = EVA02(
        arch=TINY,
        img_size=64,
        patch_size=16,
        window_size=3,
        out_indices=(0, )).eval()
    block, rope = model.blocks[0], model.rope
    x = torch.randn(1, 5, 4, 64)
    with torch.no_grad():
        ctx = DenseContext(grid=(5, 4), window_rope=rope.grid(3, 3, x.device))
        dense = block(x.flatten(1, 2), ctx).view_as(x)
        for r0 in (0, 3):
            for c0 in (0, 3):
                win = x[:, r0:r0 + 3, c0:c0 + 3]
                h, w = win.shape[1:3]
                rows, cols = torch.meshgrid(
                    torch.arange(h).float(),
                    torch.arange(w).float(),
                    indexing='ij')
                coords = torch.stack([rows, cols], -1).reshape(-1, 2)
                tables = rope(coords, (3, 3))
                y = block.norm1(win.reshape(1, h * w, 64))
                y = win.reshape(1, h * w, 64) + block.attn(y, tables)
                y = y + block.mlp(block.norm2(y))
                torch.testing.assert_close(
                    dense[:, r0:r0 + 3, c0:c0 + 3].reshape(1, h * w, 64),
                    y,
                    rtol=1e-5,
                    atol=1e-5)


def test_outputs_registry_and_stats():
    model = MODELS.build(
        dict(
            type='EVA02',
            arch=TINY,
            img_size=64,
            patch_size=16,
            window_size=2,
            global_attn_indexes=(1, ),
            out_indices=(-1, 0)))
    x = torch.randn(2, 3, 48, 80)
    seen = []
    handle = model.register_token_observer(
        lambda tokens, baseline: seen.append((tokens, baseline)))
    outs = model(x)
    assert [o.shape for o in outs] == [(2, 64, 3, 5)] * 2
    handle.remove()
    model(x)
    assert len(seen) == 1  # once per forward, none after remove()
    for counts in seen[0]:
        assert counts.dtype == torch.int64 and counts.tolist() == [15, 15]
    with pytest.raises(ValueError, match='multiple of the patch size 16'):
        model(torch.randn(1, 3, 50, 64))
    with pytest.raises(ValueError, match='arch'):
        EVA02(arch='huge')
    with pytest.raises(ValueError, match='missing'):
        EVA02(arch=dict(embed_dims=64))
    with pytest.raises(ValueError, match='out index'):
        EVA02(arch=TINY, out_indices=(3, ))


def test_layer_depth_and_frozen_stages():
    model = EVA02(arch=TINY, img_size=64, frozen_stages=1)
    num = TINY['num_layers'] + 2
    assert model.get_layer_depth('backbone.pos_embed') == (0, num)
    assert model.get_layer_depth('patch_embed.proj.weight') == (0, num)
    assert model.get_layer_depth('backbone.blocks.2.mlp.w3.bias') == (3, num)
    assert model.get_layer_depth('blocks.0.norm1.weight') == (1, num)
    assert model.get_layer_depth('backbone.something_else') == (num - 1, num)
    model.train()
    assert not model.pos_embed.requires_grad
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert not model.blocks[0].training and model.blocks[1].training


def test_pos_embed_resized_on_load():
    src = EVA02(
        arch=TINY, img_size=64, pretrain_img_size=64,
        pretrain_patch_size=16)  # 4 x 4 table
    dst = EVA02(arch=TINY, img_size=64)  # 16 x 16 table
    state = src.state_dict()
    state['pos_embed'] = torch.cat([torch.zeros(1, 1, 64), state['pos_embed']],
                                   1)  # with a cls row
    dst.load_state_dict(state)
    assert dst.pos_embed.shape == (1, 256, 64)
    # A constant table stays constant under bicubic resampling.
    state['pos_embed'] = torch.ones(1, 16, 64)
    dst.load_state_dict(state)
    torch.testing.assert_close(dst.pos_embed, torch.ones(1, 256, 64))


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    kw = dict(arch=TINY, img_size=64, window_size=2, drop_path_rate=0.)
    plain, cp = EVA02(**kw), EVA02(with_cp=True, **kw)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for model in (plain, cp):
        model.train()
        model(x)[0].square().mean().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_nominal_img_size_only_warns():
    """img_size is nominal: a size the model would refuse only warns."""
    import logging

    from mmengine.logging import MMLogger
    messages = []

    class Collect(logging.Handler):

        def emit(self, record):
            messages.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect()
    logger.addHandler(handler)
    try:
        model = EVA02(arch=TINY, patch_size=14)  # 1024 % 14 != 0
    finally:
        logger.removeHandler(handler)
    assert any('multiple of the patch size 14' in m for m in messages)
    assert model(torch.randn(1, 3, 56, 42))[0].shape == (1, 64, 4, 3)
