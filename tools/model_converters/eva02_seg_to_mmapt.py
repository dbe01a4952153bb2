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
import sys

from mmapt.converters import config_for, convert_eva02_seg_checkpoint
from mmapt.engine.conversion import (convert_file, converter_parser,
                                     print_dropped, save_converted)


def main() -> int:
    args = converter_parser(
        __doc__.split('\n')[0], 'released checkpoint, e.g. '
        'eva02_B_ade_seg_upernet_sz512.pth (mmseg 0.x)').parse_args()
    converted = convert_file(args, convert_eva02_seg_checkpoint)
    if converted is None:
        return 1
    state, dropped, info = converted
    print_dropped(dropped)
    config = config_for(info)
    meta = dict(source=args.src, config=config, architecture=info._asdict())
    if not save_converted(state, meta, args.dst):
        return 1
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
