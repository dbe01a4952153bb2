"""Convert a released EVA-02 ViTDet detector (detectron2) to mmapt.

Example (EVA-02-B Cascade Mask R-CNN, COCO, 1536)::

    python tools/model_converters/eva02_det_to_mmapt.py \
        eva02_B_coco_sys.pth checkpoints/eva02_B_coco_sys_mmapt.pth
    python tools/test.py configs/eva02_vitdet_coco.py \
        checkpoints/eva02_B_coco_sys_mmapt.pth --released-scoring

The Objects365-derived releases were evaluated with their EMA weights: add
``--ema``. The output holds ``{'state_dict': ..., 'meta': ...}`` with the
whole detector's keys (``backbone.*``, ``neck.*``, ``rpn_head.*``,
``roi_head.*``); it loads strictly into the config printed at the end and,
with only ``backbone.apt_embed.*`` missing, into its APT version. See
docs/reproduce.md for every released model.
"""
import argparse
import sys

from mmapt.converters.eva02_det_convert import (config_for,
                                                convert_eva02_det_checkpoint)
from mmapt.engine.conversion import (convert_file, converter_parser,
                                     print_dropped, save_converted)


def parse_args() -> argparse.Namespace:
    parser = converter_parser(
        __doc__.split('\n')[0], 'released detectron2 checkpoint (.pth)')
    parser.add_argument(
        '--ema',
        action='store_true',
        help="convert 'ema_state' instead of 'model' (the O365-derived "
        'releases report their scores with the EMA weights)')
    parser.add_argument(
        '--mask-heads',
        type=int,
        choices=(1, 3),
        default=1,
        help='1: one shared mask head (mmapt configs, D2CascadeRoIHead); '
        "3: the mask head copied into every stage of mmdet's CascadeRoIHead")
    parser.add_argument(
        '--quiet', action='store_true', help='do not list the dropped keys')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    converted = convert_file(
        args, lambda ckpt: convert_eva02_det_checkpoint(
            ckpt, use_ema=args.ema, mask_heads=args.mask_heads))
    if converted is None:
        return 1
    state, dropped, info = converted
    if not args.quiet:
        print_dropped(dropped)
    config = config_for(info)
    meta = dict(
        source=args.src,
        ema=args.ema,
        mask_heads=args.mask_heads,
        config=config,
        **info._asdict())
    if not save_converted(state, meta, args.dst,
                          f' ({len(dropped)} source keys dropped)'):
        return 1
    print(f'architecture: {info}')
    if config:
        print(f'loads into {config} (and its APT version)')
    elif info.window_size is None:
        print('the file has no RoPE tables, so its window and image size are '
              'unknown: pick the config by the released file name '
              '(docs/reproduce.md)')
    else:
        print('no shipped config has this architecture (LVIS, Objects365 '
              'and other class counts need their own config, see '
              'docs/reproduce.md)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
