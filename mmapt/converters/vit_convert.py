"""Convert DINOv2 checkpoints (timm or the official hub) to mmapt's ``ViT``.

mmapt's :class:`~mmapt.models.ViT` keeps timm's block names, so blocks copy
over unchanged. The top-level differences:

=====================================  ====================================
timm / official DINOv2                 mmapt ``ViT``
=====================================  ====================================
cls_token                              cls_token
pos_embed (1, 1 + N, C)                pos_embed (1, 1 + N, C), class row
pos_embed (1, N, C), timm reg4         zero class row prepended
reg_token (timm) / register_tokens     register_tokens
blocks.<chunk>.<i>.* (chunked hub)     blocks.<i>.*
mask_token, norm, head, fc_norm        dropped (not used for dense maps)
=====================================  ====================================

The official hub models keep the class row in ``pos_embed`` and add it to
the class token, as ``ViT`` does; timm's register models fold it into
``cls_token`` already, so a zero row gives the same class token.

Any other key (an EVA-02 SwiGLU, DINOv2-g's ``mlp.w12``, a relative position
bias) makes the conversion fail with the expected layout named.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from .eva02_convert import ConversionError, split_block_keys, unwrap_state_dict

EXPECTED = ("a DINOv2 ViT state dict (timm 'vit_*_patch14_dinov2' / "
            "'vit_*_patch14_reg4_dinov2', or the official "
            "facebookresearch/dinov2 hub layout): 'cls_token', 'pos_embed', "
            "optional 'reg_token'/'register_tokens', "
            "'patch_embed.proj.weight' and per block 'norm1', 'attn.qkv', "
            "'attn.proj', 'norm2', 'mlp.fc1', 'mlp.fc2' and optionally "
            "'ls1.gamma'/'ls2.gamma'")

_BLOCK_KEYS = [
    f'{name}.{suffix}' for name in ('norm1', 'attn.qkv', 'attn.proj', 'norm2',
                                    'mlp.fc1', 'mlp.fc2')
    for suffix in ('weight', 'bias')
]
_LAYER_SCALE_KEYS = ['ls1.gamma', 'ls2.gamma']
_DROPPED_TOP = re.compile(r'^(mask_token|norm\..*|head\..*|fc_norm\..*)$')
_KEPT_TOP = ('patch_embed.proj.weight', 'patch_embed.proj.bias', 'pos_embed',
             'cls_token')


def convert_vit_state_dict(
        checkpoint: dict) -> Tuple['OrderedDict[str, Tensor]', List[str]]:
    """Map a timm or official DINOv2 state dict to mmapt's ``ViT`` names.

    Args:
        checkpoint (dict): The loaded checkpoint (any wrapper that
            :func:`unwrap_state_dict` knows).

    Returns:
        tuple: The converted ``OrderedDict`` and the list of dropped keys
        (with a short reason each).

    Raises:
        ConversionError: The dict matches no DINOv2 layout.
    """
    try:
        state = unwrap_state_dict(checkpoint)
    except ConversionError:
        raise ConversionError(f'expected {EXPECTED}; got an empty or '
                              'non-dict checkpoint') from None
    if 'patch_embed.proj.weight' not in state or 'pos_embed' not in state:
        sample = ', '.join(sorted(state)[:6])
        raise ConversionError(f'expected {EXPECTED}; got keys like: {sample}')

    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    dropped: List[str] = []
    unknown: List[str] = []
    # The hub's chunked layout ('blocks.<chunk>.<i>.') numbers blocks
    # globally inside each chunk: the chunk index is just dropped.
    blocks, top = split_block_keys(state, r'^blocks\.(?:\d+\.)?(\d+)\.(\D.*)$')
    for key, value in top.items():
        if key in _KEPT_TOP:
            out[key] = value
        elif key in ('reg_token', 'register_tokens'):
            out['register_tokens'] = value
        elif _DROPPED_TOP.match(key):
            dropped.append(f'{key} (not used by the dense backbone)')
        else:
            unknown.append(key)

    if not blocks:
        raise ConversionError(f'expected {EXPECTED}; no blocks.<i>. keys')
    layer_scale = _LAYER_SCALE_KEYS[0] in blocks[0]
    wanted = _BLOCK_KEYS + (_LAYER_SCALE_KEYS if layer_scale else [])
    for index in sorted(blocks):
        block = blocks[index]
        missing = [k for k in wanted if k not in block]
        if missing:
            raise ConversionError(f'expected {EXPECTED}; block {index} lacks '
                                  f'{missing}')
        unknown += [f'blocks.{index}.{k}' for k in block if k not in wanted]
        out.update((f'blocks.{index}.{k}', block[k]) for k in wanted)
    if unknown:
        raise ConversionError(
            f'expected {EXPECTED}; these keys have no mmapt equivalent: '
            f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')

    pos = out['pos_embed']
    length = pos.shape[1]
    has_row = _is_square(length - 1) and not _is_square(length)
    if not has_row and not _is_square(length):
        raise ConversionError(f'pos_embed has {length} rows: neither a '
                              'square grid nor a grid plus a class row')
    if 'cls_token' in out and not has_row:
        # timm's register models fold the class row into cls_token: a zero
        # row gives the same class token.
        out['pos_embed'] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos],
                                     dim=1)
    elif 'cls_token' not in out and has_row:
        out['pos_embed'] = pos[:, 1:]
        dropped.append('pos_embed[:, 0] (class row, no class token)')
    return out, dropped


def vit_arch_hint(state: Dict[str, Tensor]) -> str:
    """``ViT`` arguments matching a converted state dict, for the user."""
    dims = state['patch_embed.proj.weight'].shape[0]
    num_layers = len(
        {k.split('.')[1]
         for k in state if k.startswith('blocks.')})
    names = {
        (192, 12): 'tiny',
        (384, 12): 'small',
        (768, 12): 'base',
        (1024, 24): 'large'
    }
    name = names.get((dims, num_layers))
    arch = repr(name) if name else (
        f'dict(embed_dims={dims}, num_layers={num_layers}, num_heads=...)')
    regs = state['register_tokens'].shape[1] \
        if 'register_tokens' in state else 0
    side = int(
        round((state['pos_embed'].shape[1] - int('cls_token' in state))**0.5))
    patch = state['patch_embed.proj.weight'].shape[-1]
    return (f"dict(type='ViT', arch={arch}, patch_size={patch}, "
            f"pretrain_img_size={side * patch}, "
            f"use_cls_token={'cls_token' in state}, "
            f'num_register_tokens={regs}, '
            f"layer_scale={'blocks.0.ls1.gamma' in state})")


def _is_square(length: int) -> bool:
    side = int(round(max(length, 0)**0.5))
    return side > 0 and side * side == length
