# Copyright (c) mmapt contributors. All rights reserved.
"""Train an mmapt detector (mmdet) or segmentor (mmseg) with mmengine's Runner.

Before the Runner is built, a wrong config path, bad APT thresholds, a
missing data set, a missing or broken checkpoint or an unwritable work dir
fails with one line naming the fix (``mmapt.engine.preflight``), and a
distributed launch without CUDA is switched to gloo on CPU. Checkpoints
load without running code (``--trust-checkpoint`` for a legacy pickle you
trust); weights that do not fit the model stop the run before its first
iteration (``mmapt.engine.checkpoint_checks``,
``mmapt.checkpoints.checkpoint_fit``).

Examples:
    python tools/train.py configs/toy/toy_apt_det.py --work-dir work_dirs/toy
    bash tools/dist_train.sh configs/apt_vitdet_coco.py 8 --auto-scale-lr
"""
import argparse

from mmengine.logging import print_log

from mmapt.apis.tool_args import add_config_arguments
from mmapt.engine.checkpoint import (add_trust_argument,
                                     checkpoint_errors_as_input_errors,
                                     safe_checkpoint_loading)
from mmapt.engine.checkpoint_checks import (check_checkpoints_load,
                                            resolve_auto_resume)
from mmapt.engine.preflight import (add_runner_args, build_runner,
                                    check_checkpoints, check_data,
                                    check_pack_size_option,
                                    exit_on_input_error, load_runner_config,
                                    setup_cpu_distributed, warn_compile)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Train a detector or segmentor (mmdet or mmseg config)')
    add_config_arguments(parser)
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic mixed precision training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate linearly from the config\'s '
        'auto_scale_lr.base_batch_size to the real total batch size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint; without a path, resume from '
        'the latest checkpoint in the work dir (the newest intact one, '
        'with a warning, when last_checkpoint names a broken file)')
    add_trust_argument(parser)
    add_runner_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_runner_config(args)
    check_pack_size_option(cfg, args.config, 'train')

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in the config.',
                logger='current')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError(
                f'--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                f'{args.config}')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = resolve_auto_resume(cfg.work_dir,
                                            args.trust_checkpoint)
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    splits = ('train', 'val') if cfg.get('val_cfg') else ('train', )
    check_data(cfg, args.config, splits)
    check_checkpoints(cfg, args.config, check_init=not cfg.get('resume'))
    check_checkpoints_load(cfg, args.trust_checkpoint)
    warn_compile(cfg)
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    # --resume and a fine-tune's load_from read Runner-written checkpoints;
    # weights that do not fit the model stop the run before it trains.
    with safe_checkpoint_loading(args.trust_checkpoint):
        runner.train()


if __name__ == '__main__':
    with exit_on_input_error(), checkpoint_errors_as_input_errors():
        main()
