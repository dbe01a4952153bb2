# Copyright (c) mmapt contributors. All rights reserved.
"""Print the whole config (with every ``_base_`` merged) as mmengine sees it.

Examples:
    python tools/misc/print_config.py configs/apt_vitdet_coco.py
    python tools/misc/print_config.py configs/apt_upernet_ade20k.py \
        --cfg-options model.backbone.thresholds="(5.5,)" --save-path full.py
"""
import argparse

from mmengine.config import Config

from mmapt.apis.tool_args import add_config_arguments
from mmapt.engine.preflight import add_cfg_options


def parse_args():
    parser = argparse.ArgumentParser(description='Print the full config')
    add_config_arguments(parser)
    parser.add_argument(
        '--save-path', help='also write the merged config to this .py file')
    add_cfg_options(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    print(cfg.pretty_text)
    if args.save_path:
        if not args.save_path.endswith('.py'):
            raise ValueError(f'--save-path {args.save_path}: a config is '
                             'saved as a .py file')
        cfg.dump(args.save_path)
        print(f'saved the merged config to {args.save_path}')


if __name__ == '__main__':
    main()
