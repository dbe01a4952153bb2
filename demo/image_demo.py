# Copyright (c) mmapt contributors. All rights reserved.
"""Run an mmapt detector or segmentor on one image; save the prediction and
the APT patch grid side by side.

The config's ``default_scope`` picks the task: ``mmdet`` draws boxes and
masks, ``mmseg`` a mask overlay. The patch grid is the tokenizer's choice on
exactly the tensor the backbone sees (after resizing, padding and
normalisation), drawn on that canvas: base patches thin, larger patches in
brighter colours. Plain EVA-02 configs show the uniform base grid.

Examples:
    python demo/image_demo.py data/toy_coco/val2017/000000.png \
        configs/toy/toy_apt_det.py work_dirs/toy_apt_det/iter_400.pth
    python demo/image_demo.py demo.jpg configs/apt_upernet_ade20k.py ckpt.pth \
        --out-file outputs/demo_seg.png
"""
import argparse
import os
import os.path as osp
from typing import Optional, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config

from mmapt.engine.checkpoint import trusted_checkpoints
from mmapt.engine.preflight import add_cfg_options
from mmapt.utils.patch_grid import (caption_bar, draw_patch_grid, side_by_side,
                                    tokenizer_from_config)


def parse_args():
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
    add_cfg_options(parser)
    return parser.parse_args()


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


def build_model(cfg: Config, checkpoint: Optional[str], device: str,
                scope: str):
    if scope == 'mmdet':
        from mmdet.apis import init_detector
        with trusted_checkpoints():  # a Runner-written (trained) checkpoint
            model = init_detector(cfg, checkpoint, device=device)
    elif scope == 'mmseg':
        from mmseg.apis import init_model
        with trusted_checkpoints():
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


def main():
    args = parse_args()
    if not osp.isfile(args.image):
        raise FileNotFoundError(f'image {args.image} not found')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    # A demo never needs the backbone's pretraining weights.
    cfg.model.backbone.init_cfg = None
    model = build_model(cfg, args.checkpoint, args.device, scope)

    captured = {}

    def grab_inputs(module, inputs, output):
        captured.setdefault('inputs', output['inputs'].detach())

    handle = model.data_preprocessor.register_forward_hook(grab_inputs)
    image = cv2.cvtColor(cv2.imread(args.image), cv2.COLOR_BGR2RGB)
    if scope == 'mmdet':
        from mmdet.apis import inference_detector
        result = inference_detector(model, args.image)
    else:
        from mmseg.apis import inference_model
        result = inference_model(model, args.image)
    handle.remove()

    pred_img, pred_caption = draw_prediction(model, image, result, scope,
                                             args.score_thr, args.opacity)
    grid_img, grid_caption, _ = draw_patch_grid(captured['inputs'][:1],
                                                tokenizer_from_config(cfg))
    picture = side_by_side(
        caption_bar(pred_img, pred_caption),
        caption_bar(grid_img, 'patches: ' + grid_caption))

    out_file = args.out_file or osp.join(
        'outputs', f'{osp.splitext(osp.basename(args.image))[0]}_'
        f'{osp.splitext(osp.basename(args.config))[0]}.png')
    os.makedirs(osp.dirname(out_file) or '.', exist_ok=True)
    cv2.imwrite(out_file, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f'{pred_caption}; patches: {grid_caption}')
    print(f'saved {out_file}')


if __name__ == '__main__':
    main()
