# Copyright (c) mmapt contributors. All rights reserved.
"""Test an mmapt detector (mmdet) or segmentor (mmseg) with mmengine's Runner.

Besides mmengine's logs, the metrics (plus the token statistics of
``TokenStatsHook`` and the mean time per test iteration) are written to
``WORK_DIR/test_metrics.json``.

Mixed precision: ``--amp`` runs backbone + neck under autocast (fp16 on
CUDA, bf16 on CPU; ``--amp-dtype`` picks), the heads in fp32
(``--amp-scope model`` autocasts the heads too). The same through the config:
``test_cfg = dict(type='AmpTestLoop', dtype='bf16')``.

``--accelerate compile`` runs the backbone compiled (torch.compile,
inductor; CPU or GPU), ``--accelerate cuda_graphs`` as CUDA graphs (CUDA
only), one per input shape and, for APT, per token bucket; the same as
``--cfg-options model.backbone.accelerate=compile``.

Examples:
    python tools/test.py configs/toy/toy_apt_det.py work_dirs/toy/iter_400.pth
    bash tools/dist_test.sh configs/apt_vitdet_coco.py ckpt.pth 8 --amp
    bash tools/dist_test.sh configs/apt_vitdet_coco.py ckpt.pth 8 --out r.pkl
"""
import argparse
import json
import os.path as osp

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.logging import print_log

from mmapt.apis.tool_args import add_config_arguments
from mmapt.engine.accelerate import add_accelerate_arg, apply_accelerate
from mmapt.engine.amp import AMP_SCOPES, apply_amp_test_cfg
from mmapt.engine.checkpoint import (add_trust_argument,
                                     checkpoint_errors_as_input_errors,
                                     safe_checkpoint_loading)
from mmapt.engine.preflight import (add_runner_args, build_runner,
                                    check_checkpoint_path, check_data,
                                    check_pack_size_option, check_writable_dir,
                                    exit_on_input_error, load_runner_config,
                                    setup_cpu_distributed)
from mmapt.engine.released import apply_released_test_cfg


def parse_args():
    parser = argparse.ArgumentParser(
        description='Test a detector or segmentor (mmdet or mmseg config)')
    add_config_arguments(parser, checkpoint='required')
    parser.add_argument(
        '--out',
        help='detection: dump the predictions to this .pkl file; '
        'segmentation: write the predicted masks into this directory')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory (relative to the work dir for detection) where '
        'painted images are saved')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='test-time augmentation (segmentation configs that define '
        'tta_model and tta_pipeline: multi-scale + flip)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed-precision test: backbone and neck under autocast (fp16 '
        'on CUDA, bf16 on CPU unless --amp-dtype), heads in fp32')
    parser.add_argument(
        '--amp-dtype',
        choices=['fp16', 'bf16'],
        help='autocast dtype for --amp (implies --amp)')
    parser.add_argument(
        '--amp-scope',
        choices=list(AMP_SCOPES),
        default='features',
        help="what --amp autocasts: 'features' (backbone + neck; default) "
        "or 'model' (heads too)")
    parser.add_argument(
        '--released-scoring',
        action='store_true',
        help="detection: the test-time overrides EVA-02 reported its "
        "released 1536 detectors with (the config's released_test_cfg: "
        'soft-NMS keeping every score above 0, no per-image cap); see '
        'docs/reproduce.md')
    add_accelerate_arg(parser)
    add_trust_argument(parser)
    add_runner_args(parser)
    return parser.parse_args()


def set_up_visualization(cfg: Config, args) -> None:
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError('--show/--show-dir need a visualization hook in '
                           'default_hooks')
    vis = hooks['visualization']
    vis['draw'] = True
    if args.show:
        vis['show'] = True
        vis['wait_time'] = args.wait_time
    if args.show_dir:
        if cfg.default_scope == 'mmseg':
            cfg.visualizer['save_dir'] = args.show_dir
        else:
            vis['test_out_dir'] = args.show_dir


def set_up_output(cfg: Config, out: str) -> None:
    scope = cfg.get('default_scope')
    if scope == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError('--out must be a .pkl file for detection')
        evaluator = cfg.test_evaluator
        evaluators = list(evaluator) if isinstance(evaluator,
                                                   (list,
                                                    tuple)) else [evaluator]
        evaluators.append(dict(type='DumpDetResults', out_file_path=out))
        cfg.test_evaluator = evaluators
    elif scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    else:
        raise ValueError(f'--out: unsupported default_scope {scope!r} '
                         '(expected mmdet or mmseg)')


def set_up_tta(cfg: Config, config_path: str) -> None:
    """Wrap the model in the config's ``tta_model`` and test with its
    ``tta_pipeline`` (mmseg's SegTTAModel merges the augmented logits)."""
    missing = [k for k in ('tta_model', 'tta_pipeline') if k not in cfg]
    if missing:
        raise ValueError(
            f'--tta: {config_path} defines no {" / ".join(missing)}; the '
            'ADE20K configs inherit both from configs/_base_/ (a toy or '
            'detection config has none)')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def collect_metrics(runner, metrics: dict) -> dict:
    """The evaluator's metrics plus token statistics and the mean time per
    test iteration (first iteration excluded: it includes warm-up)."""
    result = {
        k: (float(v) if isinstance(v, (int, float)) else v)
        for k, v in metrics.items()
    }
    hub = runner.message_hub
    for key in ('tokens', 'baseline_tokens', 'keep_ratio'):
        if f'test/{key}' in hub.log_scalars:
            result[key] = float(hub.get_scalar(f'test/{key}').current())
    # e.g. 'cuda float16 features' (AmpTestLoop), else full precision
    loop = runner.test_loop
    result['precision'] = getattr(
        loop, 'amp_used', None) or ('float16 model (TestLoop fp16)' if getattr(
            loop, 'fp16', False) else 'fp32')
    if 'test/time' in hub.log_scalars:
        times = hub.get_scalar('test/time').data[0]
        times = times[1:] if len(times) > 1 else times
        result['time_per_iter'] = float(times.mean())
        result['test_iters'] = int(len(times))
    return result


def main():
    args = parse_args()
    cfg = load_runner_config(args)
    check_pack_size_option(cfg, args.config, 'test')
    # A full checkpoint is loaded: the backbone's pretraining init is not.
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        set_up_visualization(cfg, args)
    if args.out is not None:
        set_up_output(cfg, args.out)
    if args.amp or args.amp_dtype:
        apply_amp_test_cfg(cfg, args.amp_dtype, args.amp_scope)
    if args.released_scoring:
        apply_released_test_cfg(cfg, args.config)
    apply_accelerate(cfg, args.accelerate)
    if args.tta:
        set_up_tta(cfg, args.config)

    check_checkpoint_path(args.checkpoint, 'checkpoint')
    if args.out is not None:
        check_writable_dir(
            args.out if cfg.get('default_scope') == 'mmseg' else
            osp.dirname(args.out) or '.', '--out')
    check_data(cfg, args.config, ('test', ))
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    # A Runner-written (trained) checkpoint, loaded without running code.
    with safe_checkpoint_loading(args.trust_checkpoint):
        metrics = runner.test()

    if is_main_process():
        result = collect_metrics(runner, metrics)
        out_file = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(out_file, 'w') as f:
            json.dump(result, f, indent=2)
        print_log(f'metrics written to {out_file}', logger='current')


if __name__ == '__main__':
    with exit_on_input_error(), checkpoint_errors_as_input_errors():
        main()
