"""FLOPs of an APT model and its plain baseline on real images.

    python tools/analysis/get_flops.py configs/apt_vitdet_coco.py \
        --compare configs/eva02_vitdet_coco.py --images data/photos \
        --num-images 5 --json

Both models are built from their configs with the same weights and every
image runs through each config's test pipeline and data preprocessor, then
``model(..., mode='predict')`` once under ``torch.utils.flop_counter``.

How it counts (FLOPs = 2 x multiply-adds; mmengine's and fvcore's "flops"
are multiply-adds, half these numbers):

* Matrix products and convolutions (linear layers, patch embeddings, the
  APT embedding's conv aggregation and ZeroLinear, neck, heads): torch's
  ``FlopCounterMode`` (``2 m n k`` per product), on the ops that actually
  ran, so the data-dependent parts (proposals, detections, slide crops) are
  those of these images.
* Attention (``softmax(q k^T) v``): no counter sees packed attention, and
  the CPU fallback computes padded buckets that the CUDA varlen kernel
  does not, so it is counted analytically from the groups that were
  attended: ``4 * heads * head_dim * sum_g L_g**2`` per call, ``L_g`` the
  token count of group ``g`` (an image for global blocks, an (image,
  window) pair for window blocks; partial windows count their own length).
  The dense baseline attends over whole windows (padded ones included, as
  it computes them) and whole images. The counter's own SDPA / batched
  matrix products inside the backbone are dropped in favour of this count.
* Not counted: norms, softmax, RoPE, activations, gathers, the entropy
  tokenizer (histograms, no multiply-adds): on CPU they are a few percent of
  the time, not FLOPs.

Reported per model: backbone and whole-model GFLOPs per image (mean over the
images), the backbone's attention share, and the APT / baseline ratios.
"""
import argparse
import json
import os
import sys
from typing import Dict, List

import torch

from mmapt.apis.tool_args import add_json_argument
from mmapt.benchmark.analysis import (add_model_pair_arguments,
                                      build_model_pair, image_paths,
                                      load_config_pair, prepare, test_pipeline)
from mmapt.benchmark.flops import count_flops


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_model_pair_arguments(parser)
    add_json_argument(parser)
    return parser.parse_args(argv)


def count_model(model, pipeline, paths: List[str]) -> Dict[str, float]:
    """Mean GFLOPs per image of the backbone, its attention and the whole
    model."""
    sums = dict(backbone=0., attention=0., model=0.)
    for path in paths:
        data = prepare(pipeline, path)
        with torch.no_grad(), count_flops(model) as flops:
            model(**model.data_preprocessor(data, False), mode='predict')
        for key in sums:
            sums[key] += flops[key]
    return {k: v / len(paths) / 1e9 for k, v in sums.items()}


def main(argv=None) -> None:
    args = parse_args(argv)
    apt_cfg, base_cfg, registry = load_config_pair(args.config, args.compare,
                                                   args.cfg_options)
    paths = image_paths(args.images, args.num_images, args.img_prefix)
    apt, baseline = build_model_pair(apt_cfg, base_cfg, registry)
    from mmengine.dataset import Compose
    results = {
        'baseline': count_model(baseline, Compose(test_pipeline(base_cfg)),
                                paths),
        'apt': count_model(apt, Compose(test_pipeline(apt_cfg)), paths),
    }
    print(f'GFLOPs per image (mean of {len(paths)} images; FLOPs = 2 x '
          'multiply-adds)')
    print(f'{"model":<10}{"backbone":>10}{"attention":>11}{"whole":>10}')
    for name, r in results.items():
        print(f'{name:<10}{r["backbone"]:>10.1f}{r["attention"]:>11.1f}'
              f'{r["model"]:>10.1f}')
    summary = dict(
        baseline_backbone_gflops=round(results['baseline']['backbone'], 2),
        apt_backbone_gflops=round(results['apt']['backbone'], 2),
        baseline_gflops=round(results['baseline']['model'], 2),
        apt_gflops=round(results['apt']['model'], 2),
        backbone_flops_ratio=round(
            results['baseline']['backbone'] / results['apt']['backbone'], 4),
        flops_ratio=round(
            results['baseline']['model'] / results['apt']['model'], 4),
        attention_gflops=dict(
            baseline=round(results['baseline']['attention'], 2),
            apt=round(results['apt']['attention'], 2)),
        images=[os.path.basename(p) for p in paths],
        config=args.config,
        compare=args.compare)
    print(f'baseline / APT FLOPs: backbone {summary["backbone_flops_ratio"]}'
          f', whole model {summary["flops_ratio"]}')
    if args.json:
        print(json.dumps(summary))


if __name__ == '__main__':
    sys.exit(main())
