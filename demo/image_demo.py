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
import torch.nn.functional as F
from mmengine.config import Config, DictAction

# One colour per patch scale (RGB): 16, 32, 64, 128, 256 px.
SCALE_COLORS = [(235, 235, 235), (0, 220, 0), (0, 140, 255), (255, 0, 200),
                (255, 200, 0)]


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
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
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
        model = init_detector(cfg, checkpoint, device=device)
    elif scope == 'mmseg':
        from mmseg.apis import init_model
        model = init_model(cfg, checkpoint, device=device)
    else:
        raise ValueError(
            f'default_scope {scope!r} is not supported: use an mmdet or '
            'mmseg config of mmapt')
    if checkpoint is None or not getattr(model, 'dataset_meta', None):
        model.dataset_meta = dataset_meta_from_config(cfg, scope)
    return model


def make_tokenizer(model, cfg: Config):
    """A PatchTokenizer with the backbone's settings (windows ignored: they
    change the token order, not the patches)."""
    from mmapt.tokenizer import PatchTokenizer
    bb_cfg = cfg.model.backbone
    backbone = model.backbone
    tok = getattr(backbone, 'tokenizer', None)
    if isinstance(tok, PatchTokenizer):
        return PatchTokenizer(
            patch_size=tok.patch_size,
            thresholds=tok.thresholds,
            num_bins=tok.num_bins,
            mean=tok.mean,
            std=tok.std)
    # Plain backbone: every patch is a base patch.
    pre = cfg.model.get('data_preprocessor', {})
    return PatchTokenizer(
        patch_size=bb_cfg.get('patch_size', 16),
        thresholds=(),
        mean=pre.get('mean', (123.675, 116.28, 103.53)),
        std=pre.get('std', (58.395, 57.12, 57.375)))


def draw_patch_grid(inputs: torch.Tensor, tokenizer,
                    min_side: int = 512) -> Tuple[np.ndarray, str]:
    """Tokenize one normalised image (1, 3, H, W) and draw its patches.

    Returns:
        tuple: the RGB picture and a caption with the token counts.
    """
    multiple = tokenizer.largest_patch
    h, w = inputs.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:  # zero = the mean colour, as the data preprocessors pad
        inputs = F.pad(inputs, (0, pw, 0, ph))
    layout = tokenizer(inputs.float().cpu())
    mean = torch.tensor(tokenizer.mean).view(3, 1, 1)
    std = torch.tensor(tokenizer.std).view(3, 1, 1)
    canvas = (inputs[0].float().cpu() * std + mean).clamp(0, 255)
    canvas = canvas.permute(1, 2, 0).byte().numpy()
    scale = max(1, min_side // max(canvas.shape[:2]))
    canvas = np.ascontiguousarray(
        cv2.resize(
            canvas, None, fx=scale, fy=scale,
            interpolation=cv2.INTER_NEAREST))
    p = tokenizer.patch_size * scale
    rows = layout.row.tolist()
    cols = layout.col.tolist()
    sides = layout.side.tolist()
    scales = layout.scale_index.tolist()
    # Base patches first, so larger ones are drawn on top.
    for r, c, s, k in sorted(zip(rows, cols, sides, scales),
                             key=lambda t: t[3]):
        color = SCALE_COLORS[min(k, len(SCALE_COLORS) - 1)]
        cv2.rectangle(canvas, (c * p, r * p),
                      (c * p + s * p - 1, r * p + s * p - 1), color,
                      1 if k == 0 else 2)
    tokens = int(layout.num_tokens)
    baseline = layout.grid_size[0] * layout.grid_size[1]
    counts = np.bincount(np.asarray(scales, dtype=np.int64),
                         minlength=tokenizer.num_scales)
    per_scale = ' '.join(f'{sz}px:{n}'
                         for sz, n in zip(tokenizer.patch_sizes, counts))
    caption = (f'{tokens} tokens / {baseline} ({tokens / baseline:.0%}); '
               f'{per_scale}')
    return canvas, caption


def caption_bar(img: np.ndarray, text: str) -> np.ndarray:
    """The picture with ``text`` on a white bar above it (shrunk to fit)."""
    bar = np.full((28, img.shape[1], 3), 255, dtype=np.uint8)
    scale = 0.6
    while scale > 0.25 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX,
                                           scale, 1)[0][0] > img.shape[1] - 8:
        scale -= 0.05
    cv2.putText(bar, text, (4, 19), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], axis=0)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0], 256)

    def fit(img):
        w = max(1, round(img.shape[1] * height / img.shape[0]))
        return cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA
                          if img.shape[0] > height else cv2.INTER_NEAREST)

    gap = np.full((height, 8, 3), 255, dtype=np.uint8)
    return np.concatenate([fit(left), gap, fit(right)], axis=1)


def draw_prediction(model, image: np.ndarray, result, scope: str,
                    score_thr: float, opacity: float) -> Tuple[np.ndarray,
                                                               str]:
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
    grid_img, grid_caption = draw_patch_grid(captured['inputs'][:1],
                                             make_tokenizer(model, cfg))
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
