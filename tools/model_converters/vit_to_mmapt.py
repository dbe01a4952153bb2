"""Convert a DINOv2 checkpoint (timm or official hub) to mmapt's ViT.

Example (DINOv2-B with registers, official hub file)::

    python tools/model_converters/vit_to_mmapt.py \
        dinov2_vitb14_reg4_pretrain.pth dinov2_vitb14_reg4_mmapt.pth

SRC is a timm ``vit_*_patch14_dinov2`` / ``vit_*_patch14_reg4_dinov2`` state
dict (``torch.save(model.state_dict())``, ``.safetensors`` too) or an
official ``dinov2_vit*14[_reg4]_pretrain.pth``. The output holds
``{'state_dict': ..., 'meta': ...}`` with plain keys: use it as
``init_cfg=dict(type='Pretrained', checkpoint=...)`` of a ``ViT``/``APTViT``
backbone built with the arguments printed at the end.
"""
import argparse
import sys

from mmapt.checkpoints.checkpoint_file import CheckpointFileError, save_output
from mmapt.converters import (ConversionError, convert_vit_state_dict,
                              load_checkpoint_file, vit_arch_hint)
from mmapt.engine.checkpoint import add_trust_argument, check_output_file
from mmapt.engine.preflight import UnwritableOutputError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='timm or official DINOv2 checkpoint')
    parser.add_argument('dst', help='output .pth')
    add_trust_argument(parser)
    args = parser.parse_args()
    try:
        # Before the (slow) conversion: a folder the output can go to.
        check_output_file(args.dst)
        state, dropped = convert_vit_state_dict(
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
    hint = vit_arch_hint(state)
    output = dict(state_dict=state, meta=dict(source=args.src, backbone=hint))
    if not save_output(output, args.dst):
        return 1
    print(f'saved {len(state)} tensors to {args.dst}\nbackbone: {hint}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
