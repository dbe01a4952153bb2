"""Convert EVA-02 checkpoints (official BAAI or timm) to mmapt's names.

mmapt keeps the official fused layout (``attn.qkv`` + ``q_bias``/``v_bias``,
``mlp.w12`` = cat(w1, w2), ``mlp.w3``) with timm's short norm names
(``attn.norm``, ``mlp.norm``). The mapping per block:

=========================================  ==============================
official / timm                            mmapt
=========================================  ==============================
attn.q_proj/k_proj/v_proj.weight           attn.qkv.weight (cat q, k, v)
attn.qkv.weight                            attn.qkv.weight
attn.q_bias, attn.v_bias                   same
attn.q_proj.bias, attn.v_proj.bias (timm)  attn.q_bias, attn.v_bias
attn.inner_attn_ln.* / attn.norm.*         attn.norm.*
mlp.w1 + mlp.w2 / mlp.fc1_g + mlp.fc1_x    mlp.w12 (cat gate, value)
mlp.w12 / mlp.fc1                          mlp.w12
mlp.ffn_ln.* / mlp.norm.*                  mlp.norm.*
mlp.w3 / mlp.fc2                           mlp.w3
norm1, norm2, attn.proj                    same
=========================================  ==============================

Dropped (and reported): ``cls_token``, ``mask_token``, ``lm_head``/``head``,
``fc_norm``, the final ``norm``, ``rope`` buffers and the class-token row of
``pos_embed`` (``keep_cls_token`` keeps the class token and its row, for the
class-token backbones of the UperNet configs). Anything else unexpected makes
the conversion fail, so a layer-scale or relative-position checkpoint is never
silently mangled.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

# Re-exported: the converters' reader of source files.
from mmapt.checkpoints.checkpoint_file import CheckpointFileError  # noqa: F401
from mmapt.checkpoints.checkpoint_file import \
    load_checkpoint_file  # noqa: F401
from mmapt.models.layers import resize_patch_kernel, resize_pos_embed

# Checkpoint containers, outermost first.
_WRAPPERS = ('module', 'model', 'state_dict', 'model_ema')
# Prefixes of whole-model dicts whose backbone we can read.
_PREFIXES = ('backbone.', 'visual.trunk.', 'visual.', 'encoder.')
_DROPPED_TOP = re.compile(
    r'^(cls_token|mask_token|reg_token|lm_head\..*|head\..*|fc_norm\..*|'
    r'norm\..*|rope\..*|rel_pos_bias\..*)$')
_DROPPED_BLOCK = re.compile(r'^(attn\.rope\..*|attn\.k_bias|.*\.freqs_\w+)$')

EXPECTED = ("an EVA-02 state dict: 'patch_embed.proj.weight', 'pos_embed' "
            "and 'blocks.<i>.' keys with attention as 'attn.qkv.weight' or "
            "'attn.{q,k,v}_proj.weight' and the SwiGLU as 'mlp.w12'/'mlp.w1'+"
            "'mlp.w2' (official) or 'mlp.fc1'/'mlp.fc1_g'+'mlp.fc1_x' (timm); "
            "optionally under 'module', 'model' or 'state_dict'")


class ConversionError(ValueError):
    """The dict is not an EVA-02 checkpoint this converter understands."""


def unwrap_state_dict(checkpoint: dict) -> Dict[str, Tensor]:
    """Strip container keys and a whole-model prefix."""
    state = checkpoint
    for key in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise ConversionError(f'expected {EXPECTED}; got an empty or '
                              f'non-dict checkpoint ({type(state).__name__})')
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + 'blocks.0.') for k in state):
            state = {
                k[len(prefix):]: v
                for k, v in state.items() if k.startswith(prefix)
            }
            break
    return state


def split_block_keys(
    state: Dict[str, Tensor],
    pattern: str = r'^blocks\.(\d+)\.(.+)$'
) -> Tuple[Dict[int, Dict[str, Tensor]], Dict[str, Tensor]]:
    """Group ``blocks.<i>.<rest>`` keys per block; the other keys apart.

    Args:
        state (dict): A flat state dict.
        pattern (str): Regex whose groups are the block index and the key
            inside the block.

    Returns:
        tuple: ``{i: {rest: tensor}}`` and the remaining ``{key: tensor}``.

    Raises:
        ConversionError: The block indices are not 0, 1, ..., n - 1.
    """
    blocks: Dict[int, Dict[str, Tensor]] = {}
    top: Dict[str, Tensor] = {}
    for key, value in state.items():
        match = re.match(pattern, key)
        if match:
            blocks.setdefault(int(match.group(1)), {})[match.group(2)] = value
        else:
            top[key] = value
    if sorted(blocks) != list(range(len(blocks))):
        raise ConversionError(f'block indices are not contiguous: '
                              f'{sorted(blocks)}')
    return blocks, top


def convert_eva02_state_dict(
    checkpoint: dict,
    patch_size: Optional[int] = None,
    img_size: Optional[int] = None,
    kernel_resize: str = 'bicubic',
    keep_cls_token: bool = False
) -> Tuple['OrderedDict[str, Tensor]', List[str]]:
    """Map an official or timm EVA-02 state dict to mmapt's ``EVA02`` names.

    Args:
        checkpoint (dict): The loaded checkpoint (any wrapper).
        patch_size (int, optional): Resample the patch-embedding kernel to
            this size (e.g. 14 -> 16 for dense prediction).
        img_size (int, optional): Resample the position table to the grid
            ``img_size // patch size`` (the output patch size).
        kernel_resize (str): ``'bicubic'`` (EVA-02's own 14->16 script) or
            ``'pinv'`` (FlexiViT pseudo-inverse), see
            :func:`mmapt.models.layers.resize_patch_kernel`.
        keep_cls_token (bool): Keep ``cls_token`` and the class row of
            ``pos_embed`` (first, before the resampled grid) for backbones
            with ``use_cls_token=True`` (EVA-02's UperNet recipe). Backbones
            without a class token ignore both when loading. Defaults to
            False.

    Returns:
        tuple: The converted ``OrderedDict`` and the list of dropped keys
        (with a short reason each).

    Raises:
        ConversionError: The dict matches no known EVA-02 layout.
    """
    state = unwrap_state_dict(checkpoint)
    if 'patch_embed.proj.weight' not in state or not any(
            k.startswith('blocks.0.') for k in state):
        sample = ', '.join(sorted(state)[:6])
        raise ConversionError(f'expected {EXPECTED}; got keys like: {sample}')

    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    dropped: List[str] = []
    unknown: List[str] = []
    blocks, top = split_block_keys(state)
    for key, value in top.items():
        if key in ('patch_embed.proj.weight', 'patch_embed.proj.bias',
                   'pos_embed') or (keep_cls_token and key == 'cls_token'):
            out[key] = value
        elif _DROPPED_TOP.match(key):
            dropped.append(f'{key} (not used by the dense backbone)')
        else:
            unknown.append(key)

    for index in sorted(blocks):
        converted, block_dropped, block_unknown = _convert_block(blocks[index])
        prefix = f'blocks.{index}.'
        out.update((prefix + k, v) for k, v in converted.items())
        dropped += [f'{prefix}{k} (buffer, recomputed)' for k in block_dropped]
        unknown += [prefix + k for k in block_unknown]
    if unknown:
        raise ConversionError(
            f'expected {EXPECTED}; these keys have no mmapt equivalent: '
            f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')

    if keep_cls_token and 'cls_token' not in out:
        raise ConversionError('keep_cls_token: this checkpoint has no '
                              "'cls_token'")
    if 'pos_embed' in out:
        pos = out['pos_embed']
        grid = _square_side(pos.shape[1])
        has_row = grid * grid != pos.shape[1]
        if has_row and not keep_cls_token:
            dropped.append('pos_embed[:, 0] (class-token position)')
        new_patch = patch_size or out['patch_embed.proj.weight'].shape[-1]
        new_grid = img_size // new_patch if img_size else grid
        out['pos_embed'] = resize_pos_embed(pos, (new_grid, new_grid))
        if keep_cls_token:
            if not has_row:
                raise ConversionError(
                    'keep_cls_token: pos_embed has no class-token row')
            out['pos_embed'] = torch.cat([pos[:, :1], out['pos_embed']], 1)
    if patch_size:
        out['patch_embed.proj.weight'] = resize_patch_kernel(
            out['patch_embed.proj.weight'], patch_size, kernel_resize)
    return out, dropped


def _square_side(length: int) -> int:
    side = int(round(length**0.5))
    return side if side * side == length else int(round((length - 1)**0.5))


def _convert_block(
    block: Dict[str,
                Tensor]) -> Tuple[Dict[str, Tensor], List[str], List[str]]:
    """One block's keys -> (converted, dropped, unknown)."""
    src = dict(block)
    out: Dict[str, Tensor] = {}
    dropped = [k for k in src if _DROPPED_BLOCK.match(k)]
    for key in dropped:
        src.pop(key)

    def take(name: str) -> Optional[Tensor]:
        return src.pop(name, None)

    # Attention: fused or separate projections; k never has a bias.
    if 'attn.qkv.weight' in src:
        out['attn.qkv.weight'] = take('attn.qkv.weight')
    elif 'attn.q_proj.weight' in src:
        out['attn.qkv.weight'] = torch.cat([
            take('attn.q_proj.weight'),
            take('attn.k_proj.weight'),
            take('attn.v_proj.weight')
        ])
    else:
        raise ConversionError(f'expected {EXPECTED}; block has no attention '
                              f'projection (keys: {sorted(block)[:8]})')
    dims = out['attn.qkv.weight'].shape[1]
    for name in ('q', 'v'):
        bias = take(f'attn.{name}_bias')
        if bias is None:
            bias = take(f'attn.{name}_proj.bias')
        # EVA-02 always biases q and v; a bias-free source is zero-biased.
        out[f'attn.{name}_bias'] = bias if bias is not None else \
            out['attn.qkv.weight'].new_zeros(dims)
    k_bias = take('attn.k_proj.bias')
    if k_bias is not None and bool(k_bias.any()):
        raise ConversionError('attn.k_proj.bias is non-zero; EVA-02 has no '
                              'key bias')
    for old in ('attn.inner_attn_ln', 'attn.norm'):
        for suffix in ('weight', 'bias'):
            if f'{old}.{suffix}' in src:
                out[f'attn.norm.{suffix}'] = take(f'{old}.{suffix}')
    for suffix in ('weight', 'bias'):
        out[f'attn.proj.{suffix}'] = _require(src, f'attn.proj.{suffix}')
        out[f'norm1.{suffix}'] = _require(src, f'norm1.{suffix}')
        out[f'norm2.{suffix}'] = _require(src, f'norm2.{suffix}')

        # SwiGLU: gate first, as the official w12 and timm's GluMlp
        # (gate_last=False) both store it.
        if f'mlp.w12.{suffix}' in src:
            out[f'mlp.w12.{suffix}'] = take(f'mlp.w12.{suffix}')
        elif f'mlp.fc1.{suffix}' in src:
            out[f'mlp.w12.{suffix}'] = take(f'mlp.fc1.{suffix}')
        elif f'mlp.w1.{suffix}' in src:
            out[f'mlp.w12.{suffix}'] = torch.cat(
                [take(f'mlp.w1.{suffix}'),
                 _require(src, f'mlp.w2.{suffix}')])
        elif f'mlp.fc1_g.{suffix}' in src:
            out[f'mlp.w12.{suffix}'] = torch.cat([
                take(f'mlp.fc1_g.{suffix}'),
                _require(src, f'mlp.fc1_x.{suffix}')
            ])
        else:
            raise ConversionError(
                f'expected {EXPECTED}; block has no SwiGLU input layer '
                f'(keys: {sorted(block)})')
        for old in ('mlp.ffn_ln', 'mlp.norm'):
            if f'{old}.{suffix}' in src:
                out[f'mlp.norm.{suffix}'] = take(f'{old}.{suffix}')
        third = take(f'mlp.w3.{suffix}')
        out[f'mlp.w3.{suffix}'] = third if third is not None else _require(
            src, f'mlp.fc2.{suffix}')
    return out, dropped, sorted(src)


def _require(src: Dict[str, Tensor], key: str) -> Tensor:
    if key not in src:
        raise ConversionError(f'expected {EXPECTED}; block key {key!r} is '
                              'missing')
    return src.pop(key)
