"""DINOv2-style ViT: timm parity, checkpoint conversion, windows, training
utilities."""
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_batch_equals_alone, run_tool

from mmapt.converters import ConversionError, convert_vit_state_dict
from mmapt.models import ViT
from mmapt.models.layers import DenseContext, ViTBlock
from mmapt.registry import MODELS

timm = pytest.importorskip('timm')


def _timm_dinov2(name):
    """A random timm DINOv2 model with non-trivial values everywhere."""
    torch.manual_seed(0)
    ref = timm.create_model(
        name, pretrained=False, dynamic_img_size=True, num_classes=0).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return ref


def _timm_maps(ref, x, indices):
    with torch.no_grad():
        return ref.forward_intermediates(
            x,
            indices=list(indices),
            norm=False,
            output_fmt='NCHW',
            intermediates_only=True)


def _to_hub(timm_state, chunks=0):
    """timm DINOv2 state dict -> the official hub layout (synthetic).

    The hub keeps a class row in ``pos_embed`` (added to the class token)
    and calls the registers ``register_tokens``; with ``chunks`` the blocks
    are stored as ``blocks.<chunk>.<i>.`` like DINOv2's training models.
    """
    state = dict(timm_state)
    row = torch.randn(1, 1, state['cls_token'].shape[-1])
    out = {'mask_token': torch.zeros(1, state['cls_token'].shape[-1])}
    if 'reg_token' in state:  # timm folded the class row into cls_token
        out['register_tokens'] = state.pop('reg_token')
        out['cls_token'] = state.pop('cls_token') - row
        out['pos_embed'] = torch.cat([row, state.pop('pos_embed')], 1)
    num_blocks = len({k.split('.')[1] for k in state if k[:7] == 'blocks.'})
    for key, value in state.items():
        if chunks and key.startswith('blocks.'):
            index = int(key.split('.')[1])
            key = f'blocks.{index * chunks // num_blocks}.{key[7:]}'
        out[key] = value
    return out


@pytest.mark.parametrize('name,registers', [
    ('vit_small_patch14_dinov2', 0),
    ('vit_small_patch14_reg4_dinov2', 4),
])
def test_timm_parity(name, registers):
    """Converted weights, non-square input, all of timm's resampling."""
    ref = _timm_dinov2(name)
    state, dropped = convert_vit_state_dict(ref.state_dict())
    assert any('norm.weight' in d for d in dropped)
    model = ViT(
        arch='small',
        patch_size=14,
        img_size=518,
        num_register_tokens=registers,
        layer_scale=True,
        out_indices=(2, 11)).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 14 * 5, 14 * 8)
    with torch.no_grad():
        out = model(x)
    want = _timm_maps(ref, x, (2, 11))
    assert [o.shape for o in out] == [(2, 384, 5, 8)] * 2
    for got, expected in zip(out, want):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_contract_cli_and_pretrained(tmp_path):
    """The issue's contract: a timm state dict saved with torch.save,
    converted by the CLI, loaded through init_cfg=Pretrained."""
    ref = _timm_dinov2('vit_small_patch14_reg4_dinov2')
    src, dst = tmp_path / 'timm.pth', tmp_path / 'mmapt.pth'
    torch.save(ref.state_dict(), src)
    proc = run_tool(
        ['tools/model_converters/vit_to_mmapt.py',
         str(src),
         str(dst)])
    assert "arch='small'" in proc.stdout
    assert 'num_register_tokens=4' in proc.stdout
    model = MODELS.build(
        dict(
            type='ViT',
            arch='small',
            patch_size=14,
            img_size=518,
            num_register_tokens=4,
            layer_scale=True,
            out_indices=(11, ),
            init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 14 * 7, 14 * 4)
    with torch.no_grad():
        out = model(x)
    assert len(out) == 1 and out[0].shape == (1, 384, 7, 4)
    torch.testing.assert_close(
        out[0], _timm_maps(ref, x, (11, ))[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize('chunks', [0, 4])
def test_official_hub_layout(chunks):
    """Hub keys (class row in pos_embed, register_tokens, mask_token,
    optionally chunked blocks) give timm's outputs."""
    ref = _timm_dinov2('vit_small_patch14_reg4_dinov2')
    hub = _to_hub(ref.state_dict(), chunks)
    assert hub['pos_embed'].shape[1] == 1 + 37 * 37
    state, dropped = convert_vit_state_dict({'model': hub})
    assert any(d.startswith('mask_token') for d in dropped)
    model = ViT(arch='small', num_register_tokens=4, out_indices=(11, )).eval()
    model.load_state_dict(state)
    x = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        out = model(x)[0]
    torch.testing.assert_close(
        out, _timm_maps(ref, x, (11, ))[0], rtol=0, atol=1e-4)


def test_converter_refuses_other_layouts(tmp_path):
    from mmapt.models import EVA02
    eva = EVA02(
        arch=dict(embed_dims=64, num_layers=1, num_heads=1),
        img_size=112,
        patch_size=14,
        pretrain_img_size=112)
    with pytest.raises(ConversionError, match='DINOv2'):
        convert_vit_state_dict(eva.state_dict())
    # DINOv2-g's SwiGLU MLP is not this backbone's architecture.
    vit = ViT(
        arch=dict(embed_dims=64, num_layers=1, num_heads=1),
        pretrain_img_size=56)
    state = dict(vit.state_dict())
    state['blocks.0.mlp.w12.weight'] = state.pop('blocks.0.mlp.fc1.weight')
    with pytest.raises(ConversionError, match='mlp.fc1.weight'):
        convert_vit_state_dict(state)
    with pytest.raises(ConversionError, match='DINOv2'):
        convert_vit_state_dict({})
    src = tmp_path / 'eva.pth'
    torch.save(eva.state_dict(), src)
    proc = run_tool([
        'tools/model_converters/vit_to_mmapt.py',
        str(src),
        str(tmp_path / 'out.pth')
    ],
                    check=False)
    assert proc.returncode == 1 and 'expected a DINOv2' in proc.stderr


def _windowed_reference(block, x, grid, num_prefix):
    """A window block computed window by window with plain slicing."""
    ws = block.window_size
    y = block.norm1(x)
    prefix, patches = y[:, :num_prefix], y[:, num_prefix:]
    patches = patches.unflatten(1, grid)
    out = torch.zeros_like(patches)
    for r in range(0, grid[0], ws):
        for c in range(0, grid[1], ws):
            win = patches[:, r:r + ws, c:c + ws]
            attn = block.attn(win.flatten(1, 2)).view_as(win)
            out[:, r:r + ws, c:c + ws] = attn
    y = torch.cat([block.attn(prefix), out.flatten(1, 2)], 1)
    x = x + block.ls1(y)
    return x + block.ls2(block.mlp(block.norm2(x)))


def test_window_block_rule():
    """Patch tokens attend within windows (the last ones partial, padded
    keys masked); prefix tokens attend among themselves."""
    torch.manual_seed(0)
    block = ViTBlock(32, 2, 64, window_size=4, layer_scale_init=0.5).eval()
    x = torch.randn(2, 3 + 6 * 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            block(x, DenseContext((6, 7), 3)),
            _windowed_reference(block, x, (6, 7), 3))


def test_windows_global_blocks_and_prefix_isolation():
    """With windows, global blocks and registers, each image of a batch is
    computed alone (nothing leaks across images)."""
    torch.manual_seed(0)
    model = ViT(
        arch=dict(embed_dims=32, num_layers=3, num_heads=2),
        img_size=112,
        pretrain_img_size=56,
        window_size=4,
        global_attn_indexes=(1, ),
        num_register_tokens=2,
        out_indices=(0, 1, 2)).eval()
    assert_batch_equals_alone(model, torch.randn(2, 3, 112, 84))


def test_positions_and_size_checks():
    model = ViT(
        arch=dict(embed_dims=32, num_layers=1, num_heads=2),
        img_size=126,
        pretrain_img_size=70)
    # timm resamples with antialiasing, a different kernel from plain
    # bicubic even when upsampling.
    pos = model.pos_embed[:, 1:].reshape(1, 5, 5, 32).permute(0, 3, 1, 2)
    want = F.interpolate(
        pos, size=(9, 7), mode='bicubic', antialias=True, align_corners=False)
    torch.testing.assert_close(model.position_map((9, 7)), want)
    # 'nominal': resampled to img_size / patch_size (9 x 9), then cropped.
    model.position_grid = 'nominal'
    want = F.interpolate(
        pos, size=(9, 9), mode='bicubic', antialias=True,
        align_corners=False)[:, :, :, :7]
    torch.testing.assert_close(model.position_map((9, 7)), want)
    with pytest.raises(ValueError, match='position_grid'):
        ViT(arch='small', position_grid='canvas')
    with pytest.raises(ValueError, match='multiple of the patch size 14'):
        model(torch.zeros(1, 3, 70, 71))
    with pytest.raises(ValueError, match='num_register_tokens'):
        ViT(arch='small', num_register_tokens=-1)
    # A table of another grid is resampled on load, class row kept.
    state = dict(model.state_dict())
    state['pos_embed'] = torch.randn(1, 17, 32)
    model.load_state_dict(state)
    torch.testing.assert_close(model.pos_embed[:, 0], state['pos_embed'][:, 0])


def test_layer_depth_freezing_and_checkpointing():
    arch = dict(embed_dims=32, num_layers=2, num_heads=2)
    model = ViT(
        arch=arch,
        pretrain_img_size=56,
        num_register_tokens=1,
        frozen_stages=1)
    num = 4
    for name in ('cls_token', 'register_tokens', 'pos_embed',
                 'patch_embed.proj.weight'):
        assert model.get_layer_depth('backbone.' + name) == (0, num)
    assert model.get_layer_depth('backbone.blocks.1.ls2.gamma') == (2, num)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {
        'cls_token', 'register_tokens', 'pos_embed', 'patch_embed.proj.weight',
        'blocks.0.ls1.gamma'
    } <= frozen
    assert not any(n.startswith('blocks.1.') for n in frozen)

    torch.manual_seed(0)
    plain = ViT(
        arch=arch,
        pretrain_img_size=56,
        window_size=2,
        global_attn_indexes=(1, ),
        drop_path_rate=0.)
    cp = ViT(
        arch=arch,
        pretrain_img_size=56,
        window_size=2,
        global_attn_indexes=(1, ),
        with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 56, 56)
    grads = []
    for m in (plain, cp):
        m.train()
        m(x)[0].square().sum().backward()
        grads.append(m.cls_token.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_layer_decay_groups():
    """Prefix tokens and LayerScale: no weight decay; layer ids as EVA02."""
    from mmengine.optim import build_optim_wrapper

    import mmapt.engine  # noqa: F401  (the constructor)
    model = torch.nn.Module()
    model.backbone = ViT(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        pretrain_img_size=56,
        num_register_tokens=2)
    wrapper = build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            constructor='LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.1),
            paramwise_cfg=dict(layer_decay_rate=0.5)))
    groups = {
        name: g
        for g in wrapper.optimizer.param_groups
        for name in g['param_names']
    }
    for name in ('cls_token', 'register_tokens', 'pos_embed',
                 'blocks.0.ls1.gamma'):
        assert groups[f'backbone.{name}']['weight_decay'] == 0, name
    assert groups['backbone.blocks.1.attn.qkv.weight']['weight_decay'] > 0
    assert groups['backbone.register_tokens']['lr'] == pytest.approx(0.125)
