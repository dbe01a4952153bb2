"""Convert the released EVA-02 UperNet (ADE20K) segmentors to mmapt.

The released files (``eva02_{B,L}_ade_seg_upernet_sz{512,640}.pth``) were
saved by mmseg 0.x: ``{'meta', 'state_dict', 'optimizer', 'amp'}`` with
``backbone.*`` (EVA-02 with a class token and the pyramid ``fpn1``/``fpn2``
inside the backbone), ``decode_head.*`` (UPerHead) and ``auxiliary_head.*``
(FCNHead). mmapt's segmentor is ``EVA02`` + ``ViTPyramidNeck`` + the same
mmseg heads, so the mapping is:

=========================================  ==================================
released (mmseg 0.x)                       mmapt (mmseg 1.x)
=========================================  ==================================
backbone.cls_token                         backbone.cls_token
backbone.pos_embed (1, 1 + g*g, D)         same (class row kept, grid g kept)
backbone.patch_embed.proj.*                same
backbone.blocks.i.*                        as ``eva02_to_mmapt.py``: q/k/v ->
                                           ``attn.qkv``, w1/w2 -> ``mlp.w12``,
                                           ffn_ln -> ``mlp.norm``, w3 same
backbone.fpn1.{0,1,3}.* (ConvT, BN, ConvT) neck.levels.0.{0,1,3}.*
backbone.fpn2.0.* (ConvT)                  neck.levels.1.0.*
decode_head.*, auxiliary_head.*            same (mmseg 0.x and 1.x agree)
backbone.rope.freqs_*, blocks.i.attn.rope  dropped: RoPE tables, recomputed;
                                           checked against mmapt's formula
=========================================  ==================================

Anything else is refused, naming the layout this converter expects.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from mmapt.models.layers import RotaryEmbedding2D
from .eva02_convert import ConversionError, _convert_block

EXPECTED_SEG = (
    "a released EVA-02 UperNet segmentor saved by mmseg 0.x ({'meta', "
    "'state_dict', ...} or the bare state dict): 'backbone.cls_token', "
    "'backbone.pos_embed' (1, 1 + g*g, D), 'backbone.patch_embed.proj.*', "
    "'backbone.blocks.<i>.attn.{q,k,v}_proj.weight' + 'q_bias'/'v_bias', "
    "'backbone.blocks.<i>.mlp.{w1,w2,ffn_ln,w3}.*', 'backbone.fpn1.{0,1,3}.*',"
    " 'backbone.fpn2.0.*', 'decode_head.*' (UPerHead) and "
    "'auxiliary_head.*' (FCNHead). EVA-02 MIM backbones are converted by "
    'tools/model_converters/eva02_to_mmapt.py instead')

# EVA-02's RoPE reference grid (pt_hw_seq_len in the released configs).
ROPE_REF_GRID = 16

# fpn1 = ConvT, BN, GELU, ConvT and fpn2 = ConvT: the parameter-holding
# indices of ViTPyramidNeck's levels 0 and 1 are the same.
_NECK = re.compile(r'^backbone\.fpn([12])\.(\d+)\.(.+)$')
_NECK_INDICES = {'1': ('0', '1', '3'), '2': ('0', )}
_HEADS = re.compile(
    r'^(decode_head\.(conv_seg|psp_modules|bottleneck|lateral_convs|'
    r'fpn_convs|fpn_bottleneck)|auxiliary_head\.(conv_seg|convs|conv_cat))'
    r'\..+$')
_ROPE = re.compile(r'^backbone\.rope\.freqs_(cos|sin)$')


class SegModelInfo(NamedTuple):
    """Architecture read from a released segmentor's shapes."""
    embed_dims: int
    num_layers: int
    grid: int
    decode_channels: int
    aux_channels: int

    @property
    def img_size(self) -> int:
        return self.grid * 16


# The released models and the configs they load into (shapes -> config).
RELEASED_CONFIGS = {
    SegModelInfo(768, 12, 32, 768, 256):
    'configs/eva02_upernet_ade20k.py',
    SegModelInfo(1024, 24, 32, 1024, 256):
    'configs/eva02_upernet_ade20k_large_512.py',
    SegModelInfo(1024, 24, 40, 1536, 1536):
    'configs/eva02_upernet_ade20k_large_640.py',
}


def unwrap_seg_checkpoint(checkpoint: dict) -> Dict[str, Tensor]:
    """The segmentor's state dict from an mmseg file or a bare dict.

    mmcv/mmengine read ``state_dict`` when present and strip a DDP
    ``module.`` prefix; so does this.
    """
    state = checkpoint
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict) or not state:
        raise ConversionError(f'expected {EXPECTED_SEG}; got an empty or '
                              f'non-dict checkpoint ({type(state).__name__})')
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


def convert_eva02_seg_checkpoint(
    checkpoint: dict
) -> Tuple['OrderedDict[str, Tensor]', List[str], SegModelInfo]:
    """Map a released EVA-02 UperNet checkpoint to mmapt's segmentor names.

    Args:
        checkpoint (dict): The loaded file (mmseg 0.x dict or state dict).

    Returns:
        tuple: The converted ``OrderedDict`` (keys ``backbone.*``,
        ``neck.*``, ``decode_head.*``, ``auxiliary_head.*``), the dropped
        keys with a reason each, and the architecture read from the shapes.

    Raises:
        ConversionError: Unknown keys, a missing part, or RoPE tables that
            mmapt would not reproduce.
    """
    state = unwrap_seg_checkpoint(checkpoint)
    for required in ('backbone.cls_token', 'backbone.pos_embed',
                     'backbone.patch_embed.proj.weight',
                     'decode_head.conv_seg.weight',
                     'auxiliary_head.conv_seg.weight'):
        if required not in state:
            sample = ', '.join(sorted(state)[:6])
            raise ConversionError(f'expected {EXPECTED_SEG}; {required!r} is '
                                  f'missing (keys like: {sample})')

    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    dropped: List[str] = []
    unknown: List[str] = []
    blocks: Dict[int, Dict[str, Tensor]] = {}
    rope: Dict[str, Tensor] = {}
    for key, value in state.items():
        block = re.match(r'^backbone\.blocks\.(\d+)\.(.+)$', key)
        neck = _NECK.match(key)
        if block:
            blocks.setdefault(int(block.group(1)), {})[block.group(2)] = value
        elif key in ('backbone.cls_token', 'backbone.pos_embed',
                     'backbone.patch_embed.proj.weight',
                     'backbone.patch_embed.proj.bias'):
            out[key] = value
        elif _ROPE.match(key):
            rope[key] = value
            dropped.append(f'{key} (RoPE table, recomputed by mmapt)')
        elif neck and neck.group(2) in _NECK_INDICES[neck.group(1)]:
            level = int(neck.group(1)) - 1
            out[f'neck.levels.{level}.{neck.group(2)}.{neck.group(3)}'] = value
        elif _HEADS.match(key):
            out[key] = value
        else:
            unknown.append(key)

    if sorted(blocks) != list(range(len(blocks))) or not blocks:
        raise ConversionError(f'expected {EXPECTED_SEG}; backbone block '
                              f'indices are not 0..n-1: {sorted(blocks)}')
    for index in sorted(blocks):
        prefix = f'backbone.blocks.{index}.'
        block_rope = {
            k: blocks[index][k]
            for k in ('attn.rope.freqs_cos', 'attn.rope.freqs_sin')
            if k in blocks[index]
        }
        rope.update((prefix + k, v) for k, v in block_rope.items())
        try:
            converted, block_dropped, block_unknown = _convert_block(
                blocks[index])
        except ConversionError as err:
            raise ConversionError(f'{prefix}*: {err}') from None
        out.update((prefix + k, v) for k, v in converted.items())
        dropped += [
            f'{prefix}{k} (RoPE table, recomputed by mmapt)'
            for k in block_dropped
        ]
        unknown += [prefix + k for k in block_unknown]
    if unknown:
        raise ConversionError(
            f'expected {EXPECTED_SEG}; these keys have no mmapt equivalent: '
            f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')
    missing = [
        f'neck.levels.0.{i}.weight' for i in ('0', '1', '3')
        if f'neck.levels.0.{i}.weight' not in out
    ]
    if missing or 'neck.levels.1.0.weight' not in out:
        raise ConversionError(f'expected {EXPECTED_SEG}; the pyramid '
                              "'backbone.fpn1.{0,1,3}' / 'backbone.fpn2.0' "
                              'is incomplete')

    info = _read_info(out, len(blocks))
    for key, table in rope.items():
        _check_rope(key, table, info.grid)
    return out, dropped, info


def config_for(info: SegModelInfo) -> Optional[str]:
    """The shipped config a model of this shape loads into, if any."""
    return RELEASED_CONFIGS.get(info)


def _read_info(state: Dict[str, Tensor], num_layers: int) -> SegModelInfo:
    pos = state['backbone.pos_embed']
    if pos.dim() != 3 or pos.shape[0] != 1:
        raise ConversionError(f'expected {EXPECTED_SEG}; backbone.pos_embed '
                              f'has shape {tuple(pos.shape)}')
    grid = math.isqrt(pos.shape[1] - 1)
    if grid * grid + 1 != pos.shape[1]:
        raise ConversionError(
            f'backbone.pos_embed has {pos.shape[1]} rows; the released '
            'segmentors store a class row plus a square fine-tune grid '
            '(1 + 32*32 at 512, 1 + 40*40 at 640)')
    if tuple(state['backbone.cls_token'].shape) != (1, 1, pos.shape[2]):
        raise ConversionError(
            f'backbone.cls_token has shape '
            f'{tuple(state["backbone.cls_token"].shape)}, expected '
            f'(1, 1, {pos.shape[2]}) like pos_embed')
    return SegModelInfo(
        embed_dims=pos.shape[2],
        num_layers=num_layers,
        grid=grid,
        decode_channels=state['decode_head.conv_seg.weight'].shape[1],
        aux_channels=state['auxiliary_head.conv_seg.weight'].shape[1])


def eva02_rope_table(grid: int,
                     head_dim: int,
                     ref_grid: int = ROPE_REF_GRID) -> Tuple[Tensor, Tensor]:
    """EVA-02's flattened ``(grid*grid, head_dim)`` cos and sin tables, as
    mmapt computes them (interleaved pairs, row frequencies first)."""
    table = RotaryEmbedding2D(head_dim, ref_grid).grid(grid, grid,
                                                       torch.device('cpu'))
    # mmapt's real table: row 0 the interleaved cos, row 1 the interleaved
    # sin with the rotation's sign folded into the even channels.
    sin = table[:, 1].clone()
    sin[:, 0::2] = sin[:, 0::2].neg()
    return table[:, 0].contiguous(), sin


def _check_rope(key: str, table: Tensor, grid: int) -> None:
    """Refuse stored RoPE tables that mmapt's recomputation would not match
    (another reference grid or grid): dropping them must be safe. The
    columns are the head width."""
    if table.dim() != 2 or table.shape[0] != grid * grid:
        raise ConversionError(
            f'{key} has shape {tuple(table.shape)}, expected '
            f'({grid * grid}, head_dim) for the {grid}x{grid} grid of '
            'backbone.pos_embed')
    if table.is_meta:  # shape-only dry runs
        return
    cos, sin = eva02_rope_table(grid, table.shape[-1])
    ours = cos if key.endswith('cos') else sin
    if not torch.allclose(table.float(), ours, atol=1e-4):
        raise ConversionError(
            f'{key} differs from the EVA-02 RoPE that mmapt computes '
            f'(reference grid {ROPE_REF_GRID}, {grid}x{grid} positions); '
            'this checkpoint was trained with other RoPE settings')
