"""Export a config's model to ONNX: one graph per APT token bucket.

Detector configs: the backbone and its neck (features out); segmentor
configs: the whole segmentor in tensor mode for one crop (logits out). The
APT tokenizer is inside the graphs: a normalised image goes in. Writes
``deploy.json`` next to the files for tools/deployment/onnx_infer.py.

    python tools/deployment/export_onnx.py configs/apt_vitdet_coco.py \
        ckpt.pth --bucket 2304 --bucket 4608 --out work_dirs/onnx
"""
import argparse
import json
import sys

from mmengine.config import Config

from mmapt.apis.tool_args import add_config_arguments
from mmapt.deploy import export_deployment
from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.preflight import add_cfg_options


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_config_arguments(parser, checkpoint='optional')
    parser.add_argument(
        '--bucket',
        type=int,
        action='append',
        help='pack size in packed tokens (prefix tokens included), one '
        'graph each; repeat for several. Default: the config\'s pack_size '
        'list, or the \'auto\' buckets. Not for plain backbones.')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        help='input H [W] (default: the backbone\'s img_size for detectors, '
        'the crop size for segmentors)')
    parser.add_argument(
        '--batch-size', type=int, default=1, help='images per run')
    add_cfg_options(parser)
    add_trust_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shape = None
    if args.shape:
        if len(args.shape) > 2:
            sys.exit(f'--shape takes H or H W, got {args.shape}')
        shape = (args.shape[0], args.shape[-1])
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        manifest = export_deployment(
            cfg,
            args.out,
            checkpoint=args.checkpoint,
            buckets=args.bucket,
            input_size=shape,
            batch_size=args.batch_size,
            trust=args.trust_checkpoint)
    except (ValueError, ImportError, FileNotFoundError) as err:
        sys.exit(f'export_onnx: {err}')
    print(
        json.dumps(
            dict(
                out=args.out,
                buckets=[b['pack_size'] for b in manifest['buckets']],
                files=[b['file'] for b in manifest['buckets']],
                outputs=[o['name'] for o in manifest['outputs']]),
            indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
