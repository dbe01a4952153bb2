"""Generate a small synthetic data set in the ADE20K directory layout
(``images/`` and ``annotations/`` per split, reduce-zero-label labels; what
the scenes hold: :mod:`mmapt.datasets.toy.ade`).

Example::

    python tools/misc/make_toy_ade.py data/toy_ade --num-train 200 --num-val 40
"""
import argparse

from mmapt.datasets.toy.ade import (DEFAULT_HEIGHT_RANGE, DEFAULT_WIDTH_RANGE,
                                    write_toy_ade)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a toy data set in the ADE20K layout.')
    parser.add_argument('out_dir', help='output folder (the data root)')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=40)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--height-range', type=int, nargs=2, default=DEFAULT_HEIGHT_RANGE)
    parser.add_argument(
        '--width-range', type=int, nargs=2, default=DEFAULT_WIDTH_RANGE)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    write_toy_ade(args.out_dir, args.num_train, args.num_val, args.seed,
                  args.height_range, args.width_range)
    print(f'toy ADE20K-layout data: {args.num_train} training and '
          f'{args.num_val} validation images in {args.out_dir}')


if __name__ == '__main__':
    main()
