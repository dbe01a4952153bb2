"""Convert an official EVA-02 or timm EVA-02 checkpoint to mmapt's EVA02.

Example (EVA-02-B MIM weights for dense prediction at patch 16)::

    python tools/model_converters/eva02_to_mmapt.py \
        eva02_B_pt_in21k_p14.pt eva02_b_p16_mmapt.pth --patch-size 16

The output holds ``{'state_dict': ..., 'meta': ...}`` with plain (unprefixed)
keys: use it as ``init_cfg=dict(type='Pretrained', checkpoint=...)`` of the
backbone, or ``EVA02(...).load_state_dict(ckpt['state_dict'])``.
"""
import argparse
import sys

from mmapt.converters import convert_eva02_state_dict
from mmapt.engine.conversion import (convert_file, converter_parser,
                                     print_dropped, save_converted)


def parse_args() -> argparse.Namespace:
    parser = converter_parser(
        __doc__.split('\n')[0], 'official (.pt, weights under "module") '
        'or timm (.pth / .bin / .safetensors) checkpoint')
    parser.add_argument(
        '--patch-size',
        type=int,
        default=None,
        help='resample the patch kernel (e.g. 14 -> 16)')
    parser.add_argument(
        '--img-size',
        type=int,
        default=None,
        help='resample the position table to img-size / '
        'patch-size (EVA02 resamples it to its own '
        'pretraining grid on load anyway)')
    parser.add_argument(
        '--kernel-resize',
        choices=('bicubic', 'pinv'),
        default='bicubic',
        help='bicubic (EVA-02\'s 14->16 script, default) or '
        'FlexiViT pseudo-inverse')
    parser.add_argument(
        '--keep-cls-token',
        action='store_true',
        help='keep cls_token and the class row of pos_embed '
        '(for use_cls_token=True backbones: the UperNet '
        'configs); backbones without one ignore them')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    converted = convert_file(
        args, lambda ckpt:
        convert_eva02_state_dict(ckpt, args.patch_size, args.img_size, args.
                                 kernel_resize, args.keep_cls_token))
    if converted is None:
        return 1
    state, dropped = converted
    print_dropped(dropped)
    meta = dict(
        source=args.src,
        patch_size=args.patch_size,
        img_size=args.img_size,
        kernel_resize=args.kernel_resize,
        keep_cls_token=args.keep_cls_token)
    return 0 if save_converted(state, meta, args.dst) else 1


if __name__ == '__main__':
    sys.exit(main())
