# Copyright (c) mmapt contributors. All rights reserved.
"""Draw APT's patch grid on the tensor a backbone sees (after the data
pipeline and the data preprocessor): used by ``demo/image_demo.py`` and
``tools/analysis/browse_dataset.py``."""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmapt.tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchLayout,
                             PatchTokenizer)

# One colour per patch scale (RGB): 16, 32, 64, 128, 256 px.
SCALE_COLORS = [(235, 235, 235), (0, 220, 0), (0, 140, 255), (255, 0, 200),
                (255, 200, 0)]


def tokenizer_from_config(
        cfg: Config,
        thresholds: Optional[Sequence[float]] = None,
        backbone: Optional[torch.nn.Module] = None,
        scorer_checkpoint: Optional[str] = None) -> PatchTokenizer:
    """A PatchTokenizer with the settings of ``cfg.model.backbone``, without
    building the backbone. An APT backbone
    (:func:`~mmapt.models.apt.is_apt_backbone`) gets its APT arguments, the
    tokenizer's defaults for those not set; a plain one a tokenizer that
    keeps every base patch, with the data preprocessor's mean/std.

    Args:
        cfg (Config): An mmdet / mmseg config of mmapt.
        thresholds (Sequence[float], optional): Replace the config's
            thresholds (their own number of scales: the config's explicit
            ``patch_sizes`` are dropped); a plain backbone gets them too.
        backbone (nn.Module, optional): The built APT backbone of ``cfg``:
            the tokenizer then scores with its scorer, i.e. with the weights
            its checkpoint loaded (a ``learned`` scorer has no others).
        scorer_checkpoint (str, optional): Without a built backbone, the
            weights of the config's ``learned`` scorer: a scorer-distiller
            checkpoint, or a model checkpoint holding ``backbone.apt_scorer``.

    Raises:
        ValueError: ``scorer_checkpoint`` for a config without a learned
            scorer (:func:`check_scorer_weights` refuses the opposite).
    """
    from mmapt.models.apt import (apt_tokenizer_args, backbone_cfg_of,
                                  backbone_class, init_default,
                                  is_apt_backbone)
    backbone_cfg = backbone_cfg_of(cfg)
    args = apt_tokenizer_args(backbone_cfg)
    if args is None:
        pre = cfg.model.get('data_preprocessor', {})
        args = dict(
            patch_size=backbone_cfg.get(
                'patch_size',
                init_default(
                    backbone_class(backbone_cfg['type']), 'patch_size', 16)),
            thresholds=(),
            mean=pre.get('mean', IMAGENET_MEAN),
            std=pre.get('std', IMAGENET_STD))
    # Drawn per image, without windows (they order the tokens, not the
    # patches) or static-shape padding (it adds no patch).
    args.pop('window_size', None)
    args.pop('pack_size', None)
    if backbone is not None and is_apt_backbone(backbone):
        args['scorer'] = backbone.apt.tokenizer.scorer
    elif scorer_checkpoint is not None:
        args['scorer'] = _scorer_with_weights(
            args.get('scorer'), scorer_checkpoint)
    if thresholds is not None:
        args['thresholds'] = tuple(thresholds)
        args.pop('patch_sizes', None)
    return PatchTokenizer(**args)


def _scorer_with_weights(scorer, checkpoint: str):
    """The config's learned scorer with ``checkpoint`` as its weights."""
    from mmapt.tokenizer.learned_scorer import (lacks_checkpoint,
                                                with_checkpoint)
    if not lacks_checkpoint(scorer):
        raise ValueError(
            'a scorer checkpoint was given, but the config\'s scorer, '
            f'{"entropy (the default)" if scorer is None else repr(scorer)}, '
            'is not a learned scorer without weights: drop the checkpoint, '
            'or use a config with scorer=dict(type=\'learned\')')
    return with_checkpoint(scorer, checkpoint)


def check_scorer_weights(cfg: Config,
                         scorer_checkpoint: Optional[str] = None) -> None:
    """For a tool that builds no model (so loads no model checkpoint): the
    config's learned scorer, if any, must get its weights from the config's
    ``checkpoint`` or from ``scorer_checkpoint``.

    Raises:
        ValueError: A learned scorer left without weights, naming the fix.
    """
    from mmapt.models.apt import apt_tokenizer_args, backbone_cfg_of
    from mmapt.tokenizer.learned_scorer import lacks_checkpoint
    args = apt_tokenizer_args(backbone_cfg_of(cfg)) or {}
    if scorer_checkpoint is None and lacks_checkpoint(args.get('scorer')):
        raise ValueError(
            'the config\'s learned scorer has no weights here (no model is '
            'built to load backbone.apt_scorer.* into): give the scorer '
            'checkpoint (browse_dataset.py --scorer-checkpoint PATH), '
            'written by tools/train.py on a scorer-distiller config '
            '(configs/toy/toy_learned_scorer_coco.py), or a detector / '
            'segmentor checkpoint that holds backbone.apt_scorer.*')


def draw_patch_grid(
    inputs: torch.Tensor,
    tokenizer: PatchTokenizer,
    min_side: int = 512,
    importance: Optional[torch.Tensor] = None
) -> Tuple[np.ndarray, str, PatchLayout]:
    """Tokenize one normalised image (1, 3, H, W) and draw its patches
    (``importance``: its (1, H, W) map, for the importance scorer).

    Returns:
        tuple: the RGB picture, a caption with the token counts and the
        layout.
    """
    multiple = tokenizer.largest_patch
    h, w = inputs.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:  # zero = the mean colour, as the data preprocessors pad
        inputs = F.pad(inputs, (0, pw, 0, ph))
        if importance is not None:
            importance = F.pad(importance, (0, pw, 0, ph))
    layout = tokenizer(inputs.float().cpu(),
                       None if importance is None else importance.cpu())
    mean = torch.tensor(tokenizer.mean).view(3, 1, 1)
    std = torch.tensor(tokenizer.std).view(3, 1, 1)
    canvas = (inputs[0].float().cpu() * std + mean).clamp(0, 255)
    canvas = canvas.permute(1, 2, 0).byte().numpy()
    scale = max(1, min_side // max(canvas.shape[:2]))
    canvas = np.ascontiguousarray(
        cv2.resize(
            canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    p = tokenizer.patch_size * scale
    rows = layout.row.tolist()
    cols = layout.col.tolist()
    sides = layout.side.tolist()
    scales = layout.scale_index.tolist()
    # Base patches first, so larger ones are drawn on top.
    for r, c, s, k in sorted(
            zip(rows, cols, sides, scales), key=lambda t: t[3]):
        color = SCALE_COLORS[min(k, len(SCALE_COLORS) - 1)]
        cv2.rectangle(canvas, (c * p, r * p),
                      (c * p + s * p - 1, r * p + s * p - 1), color,
                      1 if k == 0 else 2)
    tokens = int(layout.num_tokens)
    baseline = layout.grid_size[0] * layout.grid_size[1]
    counts = np.bincount(
        np.asarray(scales, dtype=np.int64), minlength=tokenizer.num_scales)
    per_scale = ' '.join(f'{sz}px:{n}'
                         for sz, n in zip(tokenizer.patch_sizes, counts))
    caption = (f'{tokens} tokens / {baseline} ({tokens / baseline:.0%}); '
               f'{per_scale}')
    return canvas, caption, layout


def caption_bar(img: np.ndarray, text: str) -> np.ndarray:
    """The picture with ``text`` on a white bar above it (shrunk to fit)."""
    bar = np.full((28, img.shape[1], 3), 255, dtype=np.uint8)
    scale = 0.6
    while scale > 0.25 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                           scale, 1)[0][0] > img.shape[1] - 8:
        scale -= 0.05
    cv2.putText(bar, text, (4, 19), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0], 256)

    def fit(img):
        w = max(1, round(img.shape[1] * height / img.shape[0]))
        return cv2.resize(
            img, (w, height),
            interpolation=cv2.INTER_AREA
            if img.shape[0] > height else cv2.INTER_NEAREST)

    gap = np.full((height, 8, 3), 255, dtype=np.uint8)
    return np.concatenate([fit(left), gap, fit(right)], axis=1)
