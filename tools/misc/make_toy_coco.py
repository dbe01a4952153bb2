# Copyright (c) mmapt contributors. All rights reserved.
"""Generate a small COCO-format instance-segmentation set of textured shapes
(the COCO 2017 layout, so COCO configs work with only ``data_root`` changed;
what the images hold: :mod:`mmapt.datasets.toy.coco`).

Example:
    python tools/misc/make_toy_coco.py data/toy_coco
"""
import argparse
import os.path as osp

from mmapt.datasets.toy import write_toy_coco


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--num-train', type=int, default=320)
    parser.add_argument('--num-val', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--min-side', type=int, default=160, help='smallest image side')
    parser.add_argument(
        '--max-side', type=int, default=320, help='largest image side')
    args = parser.parse_args()
    if args.min_side < 64 or args.max_side < args.min_side:
        parser.error('need 64 <= --min-side <= --max-side, got '
                     f'{args.min_side} and {args.max_side}')
    return args


def main():
    args = parse_args()
    splits = write_toy_coco(args.out_dir, args.num_train, args.num_val,
                            args.seed, args.min_side, args.max_side)
    for split, coco in splits.items():
        print(f'{split}: {len(coco["images"])} images, '
              f'{len(coco["annotations"])} instances -> '
              f'{osp.join(args.out_dir, split + "2017")}')


if __name__ == '__main__':
    main()
