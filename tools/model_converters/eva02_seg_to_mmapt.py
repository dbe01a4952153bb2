"""Convert a released EVA-02 UperNet ADE20K segmentor to an mmapt checkpoint.

Example (EVA-02-L, 512 crops, 59.8 mIoU as released)::

    python tools/model_converters/eva02_seg_to_mmapt.py \
        eva02_L_ade_seg_upernet_sz512.pth \
        checkpoints/eva02_L_ade_seg_upernet_sz512_mmapt.pth

The output is ``{'state_dict': ..., 'meta': ...}`` with the whole segmentor
(``backbone``, ``neck``, ``decode_head``, ``auxiliary_head``). It loads
strictly into the config the tool names (``eva02_upernet_ade20k*.py``) and,
with only ``backbone.apt_embed.*`` missing, into its APT version: pass it to
``tools/test.py CONFIG CHECKPOINT`` or as ``load_from``. See
docs/reproduce.md.
"""
import argparse
import sys

from mmapt.checkpoints.checkpoint_file import CheckpointFileError, save_output
from mmapt.converters import (ConversionError, config_for,
                              convert_eva02_seg_checkpoint,
                              load_checkpoint_file)
from mmapt.engine.checkpoint import add_trust_argument, check_output_file
from mmapt.engine.preflight import UnwritableOutputError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'src',
        help='released checkpoint, e.g. '
        'eva02_B_ade_seg_upernet_sz512.pth (mmseg 0.x)')
    parser.add_argument('dst', help='output .pth')
    add_trust_argument(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        # Before the (slow) conversion: a folder the output can go to.
        check_output_file(args.dst)
        state, dropped, info = convert_eva02_seg_checkpoint(
            load_checkpoint_file(args.src, trust=args.trust_checkpoint))
    except (CheckpointFileError, UnwritableOutputError) as err:
        # the message names the file
        print(f'error: {err}', file=sys.stderr)
        return 1
    except ConversionError as err:
        print(f'error: {args.src}: {err}', file=sys.stderr)
        return 1
    for key in dropped:
        print(f'dropped {key}')
    config = config_for(info)
    output = dict(
        state_dict=state,
        meta=dict(source=args.src, config=config, architecture=info._asdict()))
    if not save_output(output, args.dst):
        return 1
    print(f'saved {len(state)} tensors to {args.dst}')
    print(f'architecture: {info._asdict()}')
    if config:
        print(f'loads into {config} (and its APT version)')
    else:
        print(
            'warning: no shipped config has this architecture; adapt '
            'embed_dims/num_layers, pos_embed_grid, decode/aux channels '
            'of configs/eva02_upernet_ade20k*.py',
            file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
