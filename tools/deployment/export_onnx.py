"""Export a config's model to ONNX: one graph per APT token bucket.

Detector configs: the backbone and its neck (features out); segmentor
configs: the whole segmentor in tensor mode for one crop (logits out). The
APT tokenizer is inside the graphs: a normalised image goes in. Writes
``deploy.json`` next to the files for tools/deployment/onnx_infer.py.

    python tools/deployment/export_onnx.py configs/apt_vitdet_coco.py \
        ckpt.pth --bucket 2304 --bucket 4608 --out work_dirs/onnx

``--fit-buckets DIR`` fits the buckets to the images of DIR instead (the
config's tokenizer counts their tokens; no block runs), prints them, the
tokens the images would run and the config lines for PyTorch's static
mode, and exports them (without ``--out``: prints only):

    python tools/deployment/export_onnx.py configs/apt_vitdet_coco.py \
        ckpt.pth --fit-buckets data/my_images --num-buckets 3 \
        --out work_dirs/onnx

``--match-thresholds DIR`` exports budget mode instead, at the keep ratio
whose token count is the mean the config's thresholds give the images of
DIR: one graph, every image the same tokens (no bucket to pick, no padding
to the next bucket):

    python tools/deployment/export_onnx.py configs/apt_vitdet_coco.py \
        ckpt.pth --match-thresholds data/my_images --out work_dirs/onnx
"""
import argparse
import copy
import json
import sys

from mmengine.config import Config

from mmapt.apis.tool_args import add_config_arguments
from mmapt.deploy import build_model, export_deployment
from mmapt.deploy.buckets import fit_report, matched_keep_ratio
from mmapt.deploy.export import input_entry
from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.preflight import add_cfg_options
from mmapt.models.apt import is_apt_backbone_cfg


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
    parser.add_argument(
        '--fit-buckets',
        metavar='IMAGES',
        help='fit the buckets to these images (a file or a folder): the '
        'sizes that minimise the tokens they run; the largest is the '
        'canvas\'s maximum, so nothing is capped. APT configs only.')
    parser.add_argument(
        '--num-buckets',
        type=int,
        default=4,
        help='buckets to fit, the largest included (default 4)')
    parser.add_argument(
        '--held-out',
        metavar='IMAGES',
        help='with --fit-buckets: also report the tokens these images (not '
        'used for the fit) run in the fitted and the \'auto\' buckets')
    parser.add_argument(
        '--match-thresholds',
        metavar='IMAGES',
        help='export budget mode (model.backbone.keep_ratio) at the mean '
        'token count the config\'s thresholds give these images (a file '
        'or a folder): one bucket that every image fills. APT configs '
        'in threshold mode only.')
    parser.add_argument(
        '--out',
        help='output folder (required, except with --fit-buckets: then '
        'without it the buckets are printed and nothing is exported)')
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
    if args.out is None and not (args.fit_buckets or args.match_thresholds):
        sys.exit('export_onnx: give the output folder (--out DIR)')
    if args.fit_buckets and args.bucket:
        sys.exit('export_onnx: give --bucket sizes or --fit-buckets IMAGES, '
                 'not both')
    if args.match_thresholds and (args.fit_buckets or args.bucket):
        sys.exit('export_onnx: --match-thresholds exports budget mode, whose '
                 'one bucket holds every image: drop --bucket / '
                 '--fit-buckets')
    if args.held_out and not args.fit_buckets:
        sys.exit('export_onnx: --held-out reports on fitted buckets: give '
                 '--fit-buckets IMAGES too')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if (args.fit_buckets or args.match_thresholds) and \
            not is_apt_backbone_cfg(cfg):
        sys.exit(f'export_onnx: {args.config} has a plain backbone: it runs '
                 'every token, so it has no buckets to fit or thresholds to '
                 'match; drop --fit-buckets / --match-thresholds (or give an '
                 'APT config)')
    try:
        model, buckets, fit, matched = None, args.bucket, None, None
        if args.match_thresholds:
            matched = matched_keep_ratio(
                build_model(
                    copy.deepcopy(cfg), args.checkpoint,
                    args.trust_checkpoint).backbone, args.match_thresholds,
                input_entry(cfg, shape, args.batch_size))
            print(json.dumps(matched, indent=2))
            if args.out is None:
                return 0
            cfg.merge_from_dict(
                {'model.backbone.keep_ratio': matched['keep_ratio']})
        if args.fit_buckets:
            # Built from a copy: the builders edit the config, whose hash
            # the manifest records.
            model = build_model(
                copy.deepcopy(cfg), args.checkpoint, args.trust_checkpoint)
            fit = fit_report(model.backbone, args.fit_buckets,
                             args.num_buckets,
                             input_entry(cfg, shape,
                                         args.batch_size), args.held_out)
            print(json.dumps(fit, indent=2))
            buckets = fit['buckets']
            if args.out is None:
                return 0
        manifest = export_deployment(
            cfg,
            args.out,
            checkpoint=args.checkpoint,
            buckets=buckets,
            input_size=shape,
            batch_size=args.batch_size,
            trust=args.trust_checkpoint,
            model=model,
            bucket_fit=fit,
            matched_thresholds=matched)
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
