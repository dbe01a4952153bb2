# Copyright (c) mmapt contributors. All rights reserved.
"""Browse a data set as the model sees it: each image after the data
pipeline (for training: flip, large-scale jitter, crop) and the model's data
preprocessor (normalisation, padding to the canvas), with its ground truth on
the left and APT's patch grid on the right.

This shows what APT sees after LSJ: a scaled-down image padded to the
1536 canvas is mostly constant padding, which takes the largest patches.
Works with the real COCO / ADE20K configs and the toy ones; a plain EVA-02
config shows the uniform base grid unless ``--thresholds`` is given.

Examples:
    python tools/analysis/browse_dataset.py configs/apt_vitdet_coco.py \
        --output-dir outputs/browse --num 10
    python tools/analysis/browse_dataset.py configs/toy/toy_apt_seg.py \
        --split val --output-dir outputs/browse_toy

A config whose backbone uses the ``learned`` scorer needs its weights, since
no model is built here: ``--scorer-checkpoint PATH`` (the scorer-distiller
checkpoint of tools/train.py, or a detector / segmentor checkpoint that holds
``backbone.apt_scorer.*``)::

    python tools/analysis/browse_dataset.py \
        configs/apt_vitdet_coco_learned.py \
        --scorer-checkpoint work_dirs/learned_scorer_coco/iter_5000.pth
"""
import argparse
import copy
import os
import os.path as osp
import statistics

import cv2
import numpy as np
import torch.nn.functional as F
from mmengine.config import Config

from mmapt.apis.tool_args import (add_config_arguments,
                                  add_scorer_checkpoint_argument)
from mmapt.engine.preflight import (BadInputError, add_cfg_options,
                                    check_apt_options, check_data,
                                    exit_on_input_error)
from mmapt.visualization.patch_grid import (caption_bar, check_scorer_weights,
                                            draw_patch_grid, side_by_side,
                                            tokenizer_from_config)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Browse a data set after the pipeline and the data '
        'preprocessor, with ground truth and APT patch grid')
    add_config_arguments(parser)
    parser.add_argument(
        '--split',
        choices=('train', 'val', 'test'),
        default='train',
        help='which dataloader to browse (train: augmented)')
    parser.add_argument(
        '--num', type=int, default=10, help='number of images to draw')
    parser.add_argument(
        '--output-dir', default='outputs/browse_dataset', help='output dir')
    parser.add_argument(
        '--thresholds',
        type=float,
        nargs='+',
        help='entropy thresholds to draw instead of the backbone\'s (also '
        'for a plain EVA-02 config); patch sizes 16 * 2**i')
    add_scorer_checkpoint_argument(parser)
    add_cfg_options(parser)
    return parser.parse_args()


def build_parts(cfg: Config, split: str):
    """The data set of ``split``, the model's data preprocessor and the
    visualizer, from the config's OpenMMLab scope."""
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        from mmdet.registry import DATASETS, MODELS, VISUALIZERS
        from mmdet.utils import register_all_modules
    elif scope == 'mmseg':
        from mmseg.registry import DATASETS, MODELS, VISUALIZERS
        from mmseg.utils import register_all_modules
    else:
        raise ValueError(f'default_scope {scope!r}: expected mmdet or mmseg')
    register_all_modules(init_default_scope=True)
    dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    return dataset, preprocessor, visualizer


def to_drawable(sample, image_shape) -> None:
    """Box and mask structures -> the tensors and arrays mmdet's visualizer
    draws; a segmentation map loaded at the original size (mmseg's test
    pipelines) -> the size of the image drawn."""
    if 'gt_sem_seg' in sample:
        seg = sample.gt_sem_seg.data
        if tuple(seg.shape[-2:]) != tuple(image_shape):
            from mmengine.structures import PixelData
            sample.gt_sem_seg = PixelData(
                data=F.interpolate(
                    seg[None].float(), size=tuple(image_shape), mode='nearest')
                [0].to(seg.dtype))
    if 'gt_instances' not in sample:
        return
    from mmdet.structures.bbox import BaseBoxes
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    instances = sample.gt_instances
    if isinstance(instances.get('bboxes'), BaseBoxes):
        instances.bboxes = instances.bboxes.tensor
    if isinstance(instances.get('masks'), (BitmapMasks, PolygonMasks)):
        instances.masks = instances.masks.to_ndarray().astype(bool)


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    with exit_on_input_error():
        check_apt_options(cfg, args.config)
        check_data(cfg, args.config, (args.split, ))
        try:  # no model is built: a learned scorer needs its weights here
            check_scorer_weights(cfg, args.scorer_checkpoint)
            tokenizer = tokenizer_from_config(
                cfg,
                args.thresholds or None,
                scorer_checkpoint=args.scorer_checkpoint)
        except ValueError as err:
            raise BadInputError(f'{args.config}: {err}') from err
    dataset, preprocessor, visualizer = build_parts(cfg, args.split)
    os.makedirs(args.output_dir, exist_ok=True)

    keep_ratios = []
    for index in range(min(args.num, len(dataset))):
        item = dataset[index]
        sample = item['data_samples']
        # The tensor the backbone gets: normalised and padded (training
        # padding when browsing the training split).
        batch = preprocessor(
            dict(
                inputs=[item['inputs']], data_samples=[copy.deepcopy(sample)]),
            training=args.split == 'train')
        grid, grid_caption, layout = draw_patch_grid(batch['inputs'][:1],
                                                     tokenizer)
        keep_ratios.append(float(layout.keep_ratio[0]))

        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # RGB
        to_drawable(sample, image.shape[:2])
        visualizer.add_datasample(
            'gt',
            np.ascontiguousarray(image),
            data_sample=sample,
            draw_pred=False,
            show=False)
        gt_caption = (f'{osp.basename(sample.img_path)} after the '
                      f'{args.split} pipeline: {image.shape[1]}x'
                      f'{image.shape[0]}')
        picture = side_by_side(
            caption_bar(visualizer.get_image(), gt_caption),
            caption_bar(grid, 'patches: ' + grid_caption))
        name = f'{index:04d}_{osp.splitext(osp.basename(sample.img_path))[0]}'
        cv2.imwrite(
            osp.join(args.output_dir, name + '.png'),
            cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        print(f'{name}: {grid_caption}')
    print(f'{len(keep_ratios)} images drawn in {args.output_dir}; mean '
          f'tokens kept {statistics.mean(keep_ratios):.1%} of the base grid')


if __name__ == '__main__':
    main()
