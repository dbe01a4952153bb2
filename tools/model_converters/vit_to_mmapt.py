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
import sys

from mmapt.converters import convert_vit_state_dict, vit_arch_hint
from mmapt.engine.conversion import (convert_file, converter_parser,
                                     print_dropped, save_converted)


def main() -> int:
    args = converter_parser(
        __doc__.split('\n')[0],
        'timm or official DINOv2 checkpoint').parse_args()
    converted = convert_file(args, convert_vit_state_dict)
    if converted is None:
        return 1
    state, dropped = converted
    print_dropped(dropped)
    hint = vit_arch_hint(state)
    meta = dict(source=args.src, backbone=hint)
    if not save_converted(state, meta, args.dst, f'\nbackbone: {hint}'):
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
