# Copyright (c) mmapt contributors. All rights reserved.
"""Run an mmapt detector or segmentor on one image; save the prediction, the
APT patch grid and the patch scorer's map side by side.

The config's ``default_scope`` picks the task: ``mmdet`` draws boxes and
masks, ``mmseg`` a mask overlay. The patch grid is the tokenizer's choice on
exactly the tensor the backbone sees (after resizing, padding and
normalisation), drawn on that canvas: base patches thin, larger patches in
brighter colours. The third panel is the config's scorer (entropy unless
``model.backbone.scorer`` says otherwise) on the finest merged scale: dark
is little detail, bright much. Plain EVA-02 configs show the uniform base
grid and no map. The image is decoded once, as the config's test pipeline
decodes it; the prediction is drawn at the size it is saved (a 10000 x 8000
photograph is not drawn at full resolution). The image is checked before
the model is built; the picture's long side is capped by ``--max-size``.

Examples:
    python demo/image_demo.py data/toy_coco/val2017/000000.png \
        configs/toy/toy_apt_det.py work_dirs/toy_apt_det/iter_400.pth
    python demo/image_demo.py demo.jpg configs/apt_upernet_ade20k.py ckpt.pth \
        --out-file outputs/demo_seg.png
    python demo/image_demo.py demo.jpg configs/apt_vitdet_coco.py ckpt.pth \
        --accelerate compile
"""
import argparse
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmapt.apis import ImageDecodeError, decode_image, pipeline_decode_backend
from mmapt.apis.inference import drawing_size, predictions_at_size
from mmapt.engine.accelerate import add_accelerate_arg, apply_accelerate
from mmapt.engine.checkpoint import add_trust_argument, safe_checkpoint_loading
from mmapt.engine.preflight import (InputError, add_cfg_options,
                                    check_apt_options, check_model_args,
                                    check_writable_file)
from mmapt.models.data_preprocessors.apt_inputs import split_apt_inputs
from mmapt.visualization.patch_grid import (caption_bar, draw_patch_grid,
                                            tokenizer_from_config)
from mmapt.visualization.score_picture import tokenizer_score_picture

# Long side of the saved picture: readable patch grids of a 1536 canvas fit,
# a 40 x 4000 strip no longer becomes a 32000-pixel-wide PNG.
DEFAULT_MAX_SIZE = 4096
GAP = 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='mmdet or mmseg config of mmapt')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        default=None,
        help='checkpoint; without it the model is randomly initialised')
    parser.add_argument(
        '--out-file',
        default=None,
        help='output picture (default outputs/<image name>_<config>.png)')
    parser.add_argument(
        '--device',
        default='cuda:0' if torch.cuda.is_available() else 'cpu',
        help='device used for inference')
    parser.add_argument(
        '--score-thr', type=float, default=0.3, help='detection score floor')
    parser.add_argument(
        '--opacity', type=float, default=0.5, help='segmentation overlay')
    parser.add_argument(
        '--max-size',
        type=int,
        default=DEFAULT_MAX_SIZE,
        help='longest side of the saved picture in pixels (default '
        f'{DEFAULT_MAX_SIZE}); the panels are shrunk to fit')
    parser.add_argument(
        '--no-map',
        action='store_true',
        help='leave out the panel of the scorer\'s map')
    add_accelerate_arg(parser)
    add_trust_argument(parser)
    add_cfg_options(parser)
    return parser.parse_args(argv)


def dataset_meta_from_config(cfg: Config, scope: str) -> dict:
    """Classes (and palette) of the config's test set, for a model without
    checkpoint metadata."""
    from mmengine.registry import DATASETS
    ds = cfg.test_dataloader.dataset
    while 'dataset' in ds:
        ds = ds.dataset
    with DATASETS.switch_scope_and_registry(scope) as registry:
        meta = dict(registry.get(ds.type).METAINFO)
    meta.update(ds.get('metainfo') or {})
    return meta


def build_model(cfg: Config,
                checkpoint: Optional[str],
                device: str,
                scope: str,
                trust: Optional[bool] = None):
    if scope == 'mmdet':
        from mmdet.apis import init_detector

        # A Runner-written (trained) checkpoint, loaded without running code.
        with safe_checkpoint_loading(trust):
            model = init_detector(cfg, checkpoint, device=device)
    elif scope == 'mmseg':
        from mmseg.apis import init_model
        with safe_checkpoint_loading(trust):
            model = init_model(cfg, checkpoint, device=device)
    else:
        raise ValueError(
            f'default_scope {scope!r} is not supported: use an mmdet or '
            'mmseg config of mmapt')
    if checkpoint is None or not getattr(model, 'dataset_meta', None):
        model.dataset_meta = dataset_meta_from_config(cfg, scope)
    return model


def draw_prediction(model, image: np.ndarray, result, scope: str,
                    score_thr: float,
                    opacity: float) -> Tuple[np.ndarray, str]:
    if scope == 'mmdet':
        from mmdet.visualization import DetLocalVisualizer
        vis = DetLocalVisualizer.get_instance(
            'mmapt_image_demo_det', alpha=opacity)
        vis.dataset_meta = model.dataset_meta
        vis.add_datasample(
            'result',
            image,
            data_sample=result,
            draw_gt=False,
            show=False,
            pred_score_thr=score_thr)
        n = int((result.pred_instances.scores >= score_thr).sum())
        return vis.get_image(), f'{n} detections (score >= {score_thr})'
    from mmseg.visualization import SegLocalVisualizer
    vis = SegLocalVisualizer.get_instance(
        'mmapt_image_demo_seg', alpha=opacity)
    vis.dataset_meta = dict(
        classes=model.dataset_meta['classes'],
        palette=model.dataset_meta['palette'])
    vis.add_datasample(
        'result', image, data_sample=result, draw_gt=False, show=False)
    labels = result.pred_sem_seg.data.unique().numel()
    return vis.get_image(), f'segmentation ({labels} classes present)'


def fit_in_box(img: np.ndarray, box: int) -> np.ndarray:
    """``img`` scaled (aspect kept) so that its long side is ``box``."""
    scale = box / max(img.shape[:2])
    size = (max(1, round(img.shape[1] * scale)),
            max(1, round(img.shape[0] * scale)))
    return cv2.resize(
        img,
        size,
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)


def compose_picture(panels: Sequence[Tuple[np.ndarray, str]],
                    max_size: int = DEFAULT_MAX_SIZE,
                    min_box: int = 256) -> np.ndarray:
    """Captioned panels in a row, the whole at most ``max_size`` wide.

    Every panel is fitted into the same square box (the largest panel's
    long side, at least ``min_box``, at most what ``max_size`` leaves per
    panel), so an extreme aspect ratio makes a thin panel instead of a huge
    picture; captions are drawn after fitting and stay readable.
    """
    if max_size < 64 * len(panels):
        raise ValueError(f'--max-size {max_size} is too small for '
                         f'{len(panels)} panels: use at least '
                         f'{64 * len(panels)}')
    box = max(min_box, max(max(img.shape[:2]) for img, _ in panels))
    box = min(box, (max_size - GAP * (len(panels) - 1)) // len(panels))
    columns: List[np.ndarray] = []
    for img, caption in panels:
        fitted = fit_in_box(img, box)
        pad = np.full((fitted.shape[0], box - fitted.shape[1], 3),
                      255,
                      dtype=np.uint8)
        columns.append(caption_bar(np.concatenate([fitted, pad], 1), caption))
    height = max(c.shape[0] for c in columns)
    row = []
    for i, column in enumerate(columns):
        if i:
            row.append(np.full((height, GAP, 3), 255, dtype=np.uint8))
        row.append(
            np.concatenate([
                column,
                np.full((height - column.shape[0], box, 3), 255, np.uint8)
            ], 0))
    return np.concatenate(row, axis=1)


def score_panel(tokenizer, images: torch.Tensor,
                importance: Optional[torch.Tensor],
                size: Tuple[int, int]) -> Tuple[np.ndarray, str]:
    """The scorer's map of the tensor the backbone saw (padded like the
    patch grid), at the patch grid picture's size."""
    multiple = tokenizer.largest_patch
    pad = (0, -images.shape[-1] % multiple, 0, -images.shape[-2] % multiple)
    images = F.pad(images.float().cpu(), pad)
    if importance is not None:
        importance = F.pad(importance.float().cpu(), pad)
    return tokenizer_score_picture(tokenizer, images, size, importance)


def check_inputs(args) -> None:
    """Fail in one line, before the (slow) model is built, on an image path
    that is missing or a folder, a config that does not exist or an output
    file that cannot be written (the image is decoded by
    :func:`read_image`, also before the model is built)."""
    if osp.isdir(args.image):
        raise SystemExit(f'error: image {args.image} is a directory, not an '
                         'image file: give one image file (for a folder, '
                         'use tools/analysis/visualize_patches.py)')
    if not osp.isfile(args.image):
        raise SystemExit(f'error: image {args.image}: no such file')
    if not osp.isfile(args.config):
        raise SystemExit(f'error: config {args.config}: no such file')
    check_checkpoint_loads(args.checkpoint, args.trust_checkpoint)
    if args.max_size < 256:
        raise SystemExit(f'error: --max-size {args.max_size} is too small: '
                         'use at least 256')
    try:
        check_writable_file(out_file_of(args), '--out-file')
    except InputError as err:
        raise SystemExit(f'error: {err}')


def out_file_of(args) -> str:
    return args.out_file or osp.join(
        'outputs', f'{osp.splitext(osp.basename(args.image))[0]}_'
        f'{osp.splitext(osp.basename(args.config))[0]}.png')


def load_config(args) -> Config:
    """The config with ``--cfg-options``; its APT options checked as
    ``tools/train.py`` checks them."""
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        check_model_args(cfg, args.config)
        check_apt_options(cfg, args.config)
    except InputError as err:
        raise SystemExit(f'error: {err}')
    return cfg


def read_image(path: str, cfg: Config) -> np.ndarray:
    """BGR pixels as the config's test pipeline decodes them (its
    ``LoadImageFromFile`` backend), decoded once for the model and the
    drawing."""
    try:
        image = decode_image(path, pipeline_decode_backend(cfg), 'bgr')
    except (ImageDecodeError, OSError) as err:
        raise SystemExit(f'error: image {err}; re-save it as PNG or JPEG')
    if image.size == 0:
        raise SystemExit(f'error: image {path} has no pixels')
    return image


def check_checkpoint_loads(path: Optional[str], trust: Optional[bool]) -> None:
    """The checkpoint exists, is whole and loads without running code
    (tensors mapped, not read), before the model is built."""
    if path is None:
        return
    from mmapt.checkpoints.checkpoint_file import (CheckpointFileError,
                                                   load_checkpoint_file)
    try:
        load_checkpoint_file(path, trust=trust, mmap=True)
    except CheckpointFileError as err:
        raise SystemExit(f'error: checkpoint {err}')


def main(argv=None):
    args = parse_args(argv)
    check_inputs(args)
    cfg = load_config(args)
    apply_accelerate(cfg, args.accelerate)
    scope = cfg.get('default_scope', 'mmdet')
    image = read_image(args.image, cfg)
    # A demo never needs the backbone's pretraining weights.
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg, args.checkpoint, args.device, scope,
                        args.trust_checkpoint)
    # The model's own scorer: a learned one has the checkpoint's weights.
    tokenizer = tokenizer_from_config(cfg, backbone=model.backbone)

    captured = {}

    def grab_inputs(module, inputs, output):
        captured.setdefault('inputs', output['inputs'].detach())

    # The prediction is drawn at the size it is saved: the model sees the
    # whole image; boxes, masks and logits come back at the drawing size.
    with_map = tokenizer.num_scales > 1 and not args.no_map
    panels = 3 if with_map else 2
    size = drawing_size(*image.shape[:2],
                        (args.max_size - GAP * (panels - 1)) // panels)
    handle = model.data_preprocessor.register_forward_hook(grab_inputs)
    with predictions_at_size(model, size):
        if scope == 'mmdet':
            from mmdet.apis import inference_detector
            result = inference_detector(model, image)
        else:
            from mmseg.apis import inference_model
            result = inference_model(model, image)
    handle.remove()
    drawn = cv2.cvtColor(
        cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA),
        cv2.COLOR_BGR2RGB)
    del image

    pred_img, pred_caption = draw_prediction(model, drawn, result, scope,
                                             args.score_thr, args.opacity)
    images, importance = split_apt_inputs(captured['inputs'][:1])
    grid_img, grid_caption, _ = draw_patch_grid(
        images, tokenizer, importance=importance)
    panels = [(pred_img, pred_caption), (grid_img, 'patches: ' + grid_caption)]
    if with_map:
        panels.append(
            score_panel(tokenizer, images, importance, grid_img.shape[:2]))
    picture = compose_picture(panels, args.max_size)

    out_file = out_file_of(args)
    os.makedirs(osp.dirname(out_file) or '.', exist_ok=True)
    cv2.imwrite(out_file, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f'{pred_caption}; patches: {grid_caption}')
    print(f'saved {out_file}')


if __name__ == '__main__':
    main()
