"""Convert the released EVA-02 ViTDet detectors (detectron2) to mmapt/mmdet.

The released files (``eva02_{B,L}_coco_{sys,bsl}.pth``, the LVIS and the
Objects365-derived ones) hold a detectron2 ``GeneralizedRCNN`` with a Cascade
Mask R-CNN head: a training dict ``{'model', 'trainer', 'iteration'[,
'ema_state']}`` or the bare state dict. mmapt's detector is mmdet's
``CascadeRCNN`` with ``EVA02`` + ``SimpleFPN`` + ``D2CascadeRoIHead``:

=============================================  ===============================
detectron2                                     mmapt (mmdet)
=============================================  ===============================
backbone.net.* (ViT)                           backbone.* as
                                               ``eva02_to_mmapt.py``: q/k/v ->
                                               ``attn.qkv``, w1/w2 ->
                                               ``mlp.w12``, ffn_ln ->
                                               ``mlp.norm``; class row of
                                               ``pos_embed`` dropped (14x14
                                               kept)
backbone.simfp_2.{0,1,3} (ConvT, LN, ConvT)    neck.fpn1.{0,1,3}
backbone.simfp_3.0 (ConvT)                     neck.fpn2.0
backbone.simfp_{2.4,3.1,4.0,5.1} (1x1 + LN)    neck.lateral_convs.{0..3}
backbone.simfp_{2.5,3.2,4.1,5.2} (3x3 + LN)    neck.fpn_convs.{0..3}
proposal_generator.rpn_head.conv.conv{i}       rpn_head.rpn_conv.{i}.conv
...rpn_head.objectness_logits / anchor_deltas  rpn_head.rpn_cls / rpn_reg
roi_heads.box_head.{k}.conv{j} (+ .norm)       roi_head.bbox_head.{k}
                                               .shared_convs.{j-1}
roi_heads.box_head.{k}.fc1                     ...bbox_head.{k}.shared_fcs.0
roi_heads.box_predictor.{k}.cls_score          ...bbox_head.{k}.fc_cls
roi_heads.box_predictor.{k}.bbox_pred          ...bbox_head.{k}.fc_reg
roi_heads.mask_head.mask_fcn{j} (+ .norm)      roi_head.mask_head.{s}.convs
                                               .{j-1}
roi_heads.mask_head.deconv / predictor         ...mask_head.{s}.upsample /
                                               conv_logits
=============================================  ===============================

A detectron2 ``Conv2d`` with a norm stores ``X.weight`` and ``X.norm.*``;
mmcv's ``ConvModule`` with ``LN2d`` stores ``X.conv.weight`` and ``X.ln.*``.
Both keep the background class last (row K of ``cls_score``) and regress
class-agnostically, so rows map one to one. detectron2 has one mask head;
``mask_heads=1`` writes it once (``D2CascadeRoIHead`` with a shared mask
head), ``mask_heads=3`` copies it into each stage of a stock
``CascadeRoIHead``.

Dropped, with the reason reported: RoPE buffers (recomputed), the class row
of ``pos_embed`` (unused by detectron2 too), the anchors and the pixel
statistics that only the EMA state holds (config values), LVIS's federated
loss weights (training only). Anything else is refused.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .eva02_convert import ConversionError, convert_eva02_state_dict

EXPECTED_DET = (
    'a detectron2 EVA-02 Cascade Mask R-CNN (the released ViTDet '
    "detectors): a training dict {'model', 'trainer', 'iteration'[, "
    "'ema_state']} or its bare state dict, with 'backbone.net.*' (EVA-02 "
    "ViT with q/k/v_proj and SwiGLU w1/w2/ffn_ln/w3), 'backbone.simfp_"
    "{2,3,4,5}.*', 'proposal_generator.rpn_head.*', 'roi_heads.box_head."
    "{0,1,2}.*', 'roi_heads.box_predictor.{0,1,2}.*' and 'roi_heads."
    "mask_head.*'. EVA-02 MIM backbones are converted by tools/"
    'model_converters/eva02_to_mmapt.py instead')

# mmcv's ConvModule names its norm child after the norm's abbreviation;
# LN2d declares ``_abbr_ = 'ln'``.
_NORM = 'ln'
_DROPPED = (
    (re.compile(r'^backbone\.net\.rope_(win|glb)\.freqs_(cos|sin)$'),
     'RoPE table, recomputed by mmapt'),
    (re.compile(r'^proposal_generator\.anchor_generator\.cell_anchors\.\d+$'),
     'anchors, made by mmdet\'s AnchorGenerator'),
    (re.compile(r'^pixel_(mean|std)$'),
     'pixel statistics, set by the data preprocessor of the config'),
    (re.compile(r'^roi_heads\.box_predictor\.\d+\.fed_loss_cls_weights$'),
     'federated-loss class weights, used in training only'),
)


class DetModelInfo(NamedTuple):
    """Architecture read from a released detector's shapes."""
    embed_dims: int
    num_layers: int
    num_classes: int
    window_size: Optional[int]  # None when the RoPE tables are absent
    img_size: Optional[int]
    global_blocks: Optional[Tuple[int, ...]]


# The released architectures and the configs they load into.
RELEASED_CONFIGS = {
    DetModelInfo(768, 12, 80, 32, 1536, (1, 3, 5, 7, 9, 11)):
    'configs/eva02_vitdet_coco.py',
    DetModelInfo(1024, 24, 80, 32, 1536, tuple(range(2, 24, 3))):
    'configs/eva02_vitdet_coco_large.py',
    DetModelInfo(768, 12, 80, 16, 1024, (2, 5, 8, 11)):
    'configs/eva02_vitdet_coco_1024.py',
    DetModelInfo(1024, 24, 80, 16, 1024, (5, 11, 17, 23)):
    'configs/eva02_vitdet_coco_large_1024.py',
    DetModelInfo(1024, 24, 80, 16, 1536, tuple(range(2, 24, 3))):
    'configs/eva02_vitdet_coco_large_o365.py',
}


def config_for(info: DetModelInfo) -> Optional[str]:
    """The shipped config a detector of this shape loads into, if any.

    Fields the file could not tell (``None``: an EMA state has no per-block
    RoPE tables, a stripped file none at all) match anything; the config is
    returned only when exactly one release fits.
    """
    matches = [
        cfg for known, cfg in RELEASED_CONFIGS.items()
        if all(v is None or v == k for v, k in zip(info, known))
    ]
    return matches[0] if len(matches) == 1 else None


def select_det_state(checkpoint: dict,
                     use_ema: bool = False) -> Dict[str, Tensor]:
    """The detector's state dict from a detectron2 file or a bare dict.

    Args:
        checkpoint (dict): The loaded file.
        use_ema (bool): Take ``ema_state`` (the weights the O365-derived
            models were evaluated with) instead of ``model``.

    Returns:
        dict: Key -> tensor (numpy arrays are turned into tensors).
    """
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise ConversionError(f'expected {EXPECTED_DET}; got an empty or '
                              f'non-dict checkpoint '
                              f'({type(checkpoint).__name__})')
    wrapped = isinstance(checkpoint.get('model'), dict) or isinstance(
        checkpoint.get('ema_state'), dict)
    if use_ema:
        if not isinstance(checkpoint.get('ema_state'), dict):
            raise ConversionError(
                "--ema: this file has no 'ema_state' entry (top-level keys: "
                f'{sorted(checkpoint)[:8]}); convert it without --ema')
        state = checkpoint['ema_state']
    elif wrapped:
        if not isinstance(checkpoint.get('model'), dict):
            raise ConversionError(
                "this file has an 'ema_state' but no 'model' entry; pass "
                '--ema to convert the EMA weights')
        state = checkpoint['model']
    else:
        state = checkpoint
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, Tensor):
            raise ConversionError(f'expected {EXPECTED_DET}; {key!r} holds a '
                                  f'{type(value).__name__}, not a tensor')
        out[re.sub(r'^module\.', '', key)] = value
    return out


def _conv_norm(src: str, dst: str) -> Dict[str, str]:
    """detectron2 ``Conv2d`` + channel LN -> mmcv ``ConvModule`` + LN2d."""
    return {
        f'{src}.weight': f'{dst}.conv.weight',
        f'{src}.norm.weight': f'{dst}.{_NORM}.weight',
        f'{src}.norm.bias': f'{dst}.{_NORM}.bias',
    }


def _plain(src: str, dst: str) -> Dict[str, str]:
    return {f'{src}.weight': f'{dst}.weight', f'{src}.bias': f'{dst}.bias'}


def det_key_map(num_stages: int = 3,
                mask_heads: int = 1) -> Dict[str, List[str]]:
    """detectron2 key -> mmapt key(s) for everything outside the ViT."""
    pairs: Dict[str, List[str]] = {}

    def add(mapping: Dict[str, str]) -> None:
        for src, dst in mapping.items():
            pairs.setdefault(src, []).append(dst)

    def four_convs(src: str, dst: str) -> None:
        # detectron2 numbers its head convs from 1, mmdet from 0.
        for j in range(1, 5):
            add(_conv_norm(f'{src}{j}', f'{dst}.{j - 1}'))

    # SimpleFeaturePyramid: simfp_N is stride 2**N.
    simfp, neck = 'backbone.simfp_', 'neck.'
    add(_plain(simfp + '2.0', neck + 'fpn1.0'))
    add(_plain(simfp + '2.1', neck + 'fpn1.1'))
    add(_plain(simfp + '2.3', neck + 'fpn1.3'))
    add(_plain(simfp + '3.0', neck + 'fpn2.0'))
    convs = (('2.4', '2.5'), ('3.1', '3.2'), ('4.0', '4.1'), ('5.1', '5.2'))
    for level, (lateral, output) in enumerate(convs):
        add(_conv_norm(simfp + lateral, f'{neck}lateral_convs.{level}'))
        add(_conv_norm(simfp + output, f'{neck}fpn_convs.{level}'))
    # RPN: two 3x3 convs with bias, then objectness and deltas.
    rpn = 'proposal_generator.rpn_head.'
    for i in range(2):
        add(_plain(f'{rpn}conv.conv{i}', f'rpn_head.rpn_conv.{i}.conv'))
    add(_plain(rpn + 'objectness_logits', 'rpn_head.rpn_cls'))
    add(_plain(rpn + 'anchor_deltas', 'rpn_head.rpn_reg'))
    # Cascade box heads: 4 conv + LN, fc1, classifier and regressor.
    for k in range(num_stages):
        dst = f'roi_head.bbox_head.{k}.'
        four_convs(f'roi_heads.box_head.{k}.conv', dst + 'shared_convs')
        add(_plain(f'roi_heads.box_head.{k}.fc1', dst + 'shared_fcs.0'))
        add(_plain(f'roi_heads.box_predictor.{k}.cls_score', dst + 'fc_cls'))
        add(_plain(f'roi_heads.box_predictor.{k}.bbox_pred', dst + 'fc_reg'))
    # One mask head, written into each of ``mask_heads`` slots.
    for s in range(mask_heads):
        dst = f'roi_head.mask_head.{s}.'
        four_convs('roi_heads.mask_head.mask_fcn', dst + 'convs')
        add(_plain('roi_heads.mask_head.deconv', dst + 'upsample'))
        add(_plain('roi_heads.mask_head.predictor', dst + 'conv_logits'))
    return pairs


def convert_eva02_det_checkpoint(
    checkpoint: dict,
    use_ema: bool = False,
    mask_heads: int = 1
) -> Tuple['OrderedDict[str, Tensor]', List[str], DetModelInfo]:
    """Map a released EVA-02 ViTDet detector to mmapt's detector names.

    Args:
        checkpoint (dict): The loaded detectron2 file or bare state dict.
        use_ema (bool): Convert ``ema_state`` instead of ``model``.
        mask_heads (int): Mask-head slots of the target: 1 for
            ``D2CascadeRoIHead`` (mmapt's configs), 3 for a stock mmdet
            ``CascadeRoIHead`` (the one head copied into every stage).

    Returns:
        tuple: The converted ``OrderedDict`` (keys ``backbone.*``,
        ``neck.*``, ``rpn_head.*``, ``roi_head.*``), the dropped keys with a
        reason each, and the architecture read from the shapes.

    Raises:
        ConversionError: Unknown keys, a missing part or inconsistent
            class counts.
    """
    if mask_heads not in (1, 3):
        raise ValueError(f'mask_heads must be 1 (shared mask head) or 3 '
                         f'(one per cascade stage), got {mask_heads}')
    state = select_det_state(checkpoint, use_ema)
    if not any(k.startswith('backbone.net.blocks.0.') for k in state):
        sample = ', '.join(sorted(state)[:6])
        raise ConversionError(
            f'expected {EXPECTED_DET}; no backbone.net.blocks.0.* key '
            f'(keys like: {sample})')
    key_map = det_key_map(mask_heads=mask_heads)

    out: 'OrderedDict[str, Tensor]' = OrderedDict()
    dropped: List[str] = []
    unknown: List[str] = []
    vit: Dict[str, Tensor] = {}
    rope_shapes: Dict[str, Tuple[int, ...]] = {}
    for key, value in state.items():
        reason = next((why for pattern, why in _DROPPED if pattern.match(key)),
                      None)
        if reason is not None:
            dropped.append(f'{key} ({reason})')
            if 'rope_' in key:
                rope_shapes[key] = tuple(value.shape)
        elif key in key_map:
            for dst in key_map[key]:
                out[dst] = value
        elif key.startswith('backbone.net.'):
            vit[key[len('backbone.net.'):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f'expected {EXPECTED_DET}; these keys have no mmapt equivalent: '
            f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')
    missing = sorted(src for src in key_map if src not in state)
    if missing:
        raise ConversionError(
            f'expected {EXPECTED_DET}; {len(missing)} keys are missing, e.g. '
            f'{missing[:6]}')

    block_rope = {
        int(m.group(1)): tuple(vit[k].shape)
        for k in vit
        for m in [re.match(r'^blocks\.(\d+)\.attn\.rope\.freqs_cos$', k)] if m
    }
    try:
        backbone, vit_dropped = convert_eva02_state_dict(vit)
    except ConversionError as err:
        raise ConversionError(f'backbone.net.*: {err}') from None
    for key, value in backbone.items():
        out[f'backbone.{key}'] = value
    dropped += [f'backbone.net.{reason}' for reason in vit_dropped]
    info = _read_info(out, rope_shapes, block_rope)
    return out, dropped, info


def _read_info(state: Dict[str, Tensor], rope_shapes: Dict[str, Tuple[int,
                                                                      ...]],
               block_rope: Dict[int, Tuple[int, ...]]) -> DetModelInfo:
    """Width, depth and classes from the weights; windows and image size
    from the RoPE tables (window blocks hold the window's, global blocks the
    image grid's)."""
    num_classes = state['roi_head.bbox_head.0.fc_cls.weight'].shape[0] - 1
    for key, value in state.items():
        if key.endswith('fc_cls.weight') and value.shape[0] != num_classes + 1:
            raise ConversionError(f'{key} has {value.shape[0]} rows, the '
                                  f'first stage {num_classes + 1}')
        if key.endswith('conv_logits.weight') and \
                value.shape[0] != num_classes:
            raise ConversionError(
                f'the mask predictor has {value.shape[0]} classes, the box '
                f'classifier {num_classes} (+ background)')
    num_layers = 1 + max(
        int(k.split('.')[2])
        for k in state if k.startswith('backbone.blocks.'))
    window = rope_shapes.get('backbone.net.rope_win.freqs_cos')
    image = rope_shapes.get('backbone.net.rope_glb.freqs_cos')
    window_size = math.isqrt(window[0]) if window else None
    img_size = math.isqrt(image[0]) * 16 if image else None
    global_blocks = None
    if block_rope and image:
        global_blocks = tuple(i for i, shape in sorted(block_rope.items())
                              if shape[0] == image[0])
    return DetModelInfo(
        embed_dims=state['backbone.patch_embed.proj.weight'].shape[0],
        num_layers=num_layers,
        num_classes=num_classes,
        window_size=window_size,
        img_size=img_size,
        global_blocks=global_blocks)
