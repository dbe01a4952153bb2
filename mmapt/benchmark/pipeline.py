"""End-to-end speed of an APT model against its plain baseline
(``tools/analysis/benchmark.py``'s default mode).

    python tools/analysis/benchmark.py configs/apt_vitdet_coco.py \
        --compare configs/eva02_vitdet_coco.py --images data/photos \
        --num-images 5 --repeat 1 --device cpu --baseline-pad window --json

Both models are built from their configs (mmdet or mmseg; the config's
``default_scope`` says which). Without a checkpoint the baseline keeps its
random initialisation and the APT model gets the same weights (its own
``apt_embed`` layers random too, ZeroLinear included, so merged tokens cost
what they cost after fine-tuning); with one, both load it. Every image goes
through each model's own test pipeline (annotation loading dropped) and
data preprocessor, then ``model(..., mode='predict')``: what ``tools/test.py``
runs per image, slide inference included.

Arms, interleaved (every repeat runs every image through every arm, the
first arm rotating), batch 1:

* ``baseline``: the ``--compare`` config as it is (ViTDet: the square
  canvas);
* ``baseline_window`` (``--baseline-pad window``, detection): the same
  model and weights, its data preprocessor padding only to the next window
  multiple instead of the square canvas;
* ``apt``: the APT config;
* ``apt_nopad`` (``--padding-free``, detection): APT padded only to its
  largest patch (128 px), windows partial at the border, positions those of
  the canvas.

Per arm: images/s (images / sum over images of the median model time,
model time = data preprocessor + forward), median latency, the split into
data pipeline / preprocess / backbone (APT: tokenizer, embedding, context =
attention plans + RoPE tables, blocks, unpack) / neck / heads, tokens and
keep ratio (the backbone's token observer; slide crops summed per image),
peak memory (CUDA ``max_memory_allocated``; not measured on CPU). The
backbone's split comes from its stage marks (``mmapt.models.stages``); it
synchronises at stage boundaries on CUDA (``--no-split`` times without
it). ``--json``: the last line is one JSON object.

``--accelerate compile`` / ``cuda_graphs``: both backbones run compiled /
as CUDA graphs (``model.backbone.accelerate``); the warm-up then runs every
image once per arm, so compiling and capturing stay out of the timings.

``--train``: training speed instead, what ``tools/train.py`` runs per
iteration: a batch from the config's own train pipeline (one set of
batches per config, the same seeds, ``--images`` a COCO-style annotation
JSON with ``--img-prefix``), the data preprocessor, the loss forward, the
backward and the optimizer step of the config's optimizer wrapper (AMP
becomes fp32 off CUDA), both models from the same weights, interleaved;
``--canvas N`` shrinks a detection config's training canvas::

    python tools/analysis/benchmark.py configs/apt_vitdet_coco.py \
        --compare configs/eva02_vitdet_coco.py --train --canvas 512 \
        --images data/toy_coco/annotations/instances_train2017.json \
        --img-prefix data/toy_coco/train2017 --num-images 3 --repeat 2 \
        --clock cpu --json
"""
import argparse
import copy
import json
import os
import sys
from contextlib import nullcontext
from typing import Callable, Dict, List

import torch

from mmapt.apis.tool_args import add_json_argument
from mmapt.benchmark.flops import count_flops
from mmapt.benchmark.timing import StageTimer, sync, time_call
from mmapt.engine.accelerate import add_accelerate_arg, apply_accelerate
from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.precision import add_device_dtype_arguments, precision_dtype
from mmapt.engine.preflight import InputError, check_writable_file
from mmapt.models.backbones import count_tokens
from .analysis import (add_model_pair_arguments, build_model_pair, image_paths,
                       load_config_pair, model_stages, prepare, test_pipeline)
from .core import (Arm, add_clock_argument, add_threads_argument, get_clock,
                   ratio, rotated, set_threads)
from .cuda import autocast_for
from .train import run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The whole-model benchmark's command line."""
    add_model_pair_arguments(parser)
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (optional)')
    add_trust_argument(parser)
    parser.add_argument(
        '--repeat', type=int, default=2, help='timed runs per image and arm')
    parser.add_argument(
        '--warmup',
        type=int,
        default=1,
        help='untimed runs per arm, on the first image')
    add_device_dtype_arguments(parser, device='cpu', dtype='fp32')
    parser.add_argument(
        '--baseline-pad',
        choices=['config', 'window'],
        default='config',
        help='window: also time the baseline padded only to '
        'the next window multiple (detection)')
    parser.add_argument(
        '--padding-free',
        action='store_true',
        help='also time APT padded only to its largest '
        'patch (windows partial at the border; detection)')
    parser.add_argument(
        '--flops',
        action='store_true',
        help='also count FLOPs (mmapt.benchmark.flops) in the '
        'first timed run of every image and arm; its '
        'per-op bookkeeping adds well under 1%% to a CPU '
        'forward at 1536, more on a GPU')
    parser.add_argument(
        '--no-split',
        action='store_true',
        help='no per-stage split (no synchronisation at stage '
        'boundaries on CUDA)')
    parser.add_argument(
        '--train',
        action='store_true',
        help='time training iterations instead (data preprocessor, loss '
        'forward, backward, optimizer step) on batches from the config\'s '
        'train pipeline; --images must be a COCO-style annotation JSON')
    parser.add_argument(
        '--canvas',
        type=int,
        default=None,
        help='--train: shrink the training canvas to this (detection)')
    parser.add_argument(
        '--train-batch',
        type=int,
        default=1,
        help='--train: images per iteration')
    add_threads_argument(parser)
    add_clock_argument(parser)
    parser.add_argument('--seed', type=int, default=0)
    add_accelerate_arg(parser)
    parser.add_argument(
        '--out',
        help='also write the JSON summary here, '
        'updated after every image of the first repeat')
    add_json_argument(parser)


def check_args(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> None:
    """Refuse what cannot run, before any model is built."""
    if args.repeat < 1 or args.num_images < 1:
        parser.error('--repeat and --num-images must be >= 1')
    if args.out:
        try:
            check_writable_file(args.out, '--out')
        except InputError as err:
            parser.error(str(err))


def padded_preprocessor(cfg, registry, divisor: int, device):
    """A detection data preprocessor padding only to ``divisor`` (no
    square canvas)."""
    pre = copy.deepcopy(cfg.model.data_preprocessor)
    if 'pad_size_divisor' not in pre:
        raise SystemExit('--baseline-pad window / --padding-free need a '
                         'detection data preprocessor (pad_size_divisor); '
                         'segmentation slide crops are not padded to a '
                         'canvas')
    pre.pad_size_divisor = divisor
    pre.batch_augments = None
    return registry.build(pre).to(device)


class PipelineArm(Arm):
    """An :class:`~mmapt.benchmark.core.Arm` that runs a whole model on an
    image: its test pipeline, data preprocessor and ``mode='predict'``
    forward, timed and split into stages, tokens and FLOPs counted.

    Args:
        name (str): Its name in reports.
        model (nn.Module): The detector or segmentor.
        preprocessor (nn.Module): Its data preprocessor (or another).
        pipeline (list): The test pipeline's transforms (configs).
        device (torch.device): Where it runs.
        dtype (torch.dtype, optional): Autocast dtype (None: fp32).
        split (bool): Time the stages (synchronized on CUDA).
        clock (Callable): Host clock.
        flops (bool): Count FLOPs in the first timed run of every image.
    """

    def __init__(self,
                 name: str,
                 model,
                 preprocessor,
                 pipeline,
                 device,
                 dtype,
                 split: bool,
                 clock: Callable[[], float],
                 flops: bool = False) -> None:
        from mmengine.dataset import Compose
        super().__init__(name)
        self.model = model
        self.preprocessor = preprocessor
        self.pipeline = Compose(pipeline)
        self.device = device
        self.dtype = dtype
        self.split = split
        self.clock = clock
        self.count_flops = flops
        self.flops: Dict[str, Dict[str, float]] = {}
        self.peak_mib = 0.

    def run(self, path: str, record: bool = True) -> None:
        clock = self.clock
        start = clock()
        data = prepare(self.pipeline, path)
        pipeline_ms = (clock() - start) * 1e3
        model = self.model
        timer = StageTimer(self.device, clock)
        if self.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(self.device)
        autocast = autocast_for(self.device, self.dtype)

        def forward():
            with torch.no_grad():
                start = clock()
                inputs = self.preprocessor(data, False)
                sync(self.device)
                pre_ms = (clock() - start) * 1e3
                with autocast:
                    model(**inputs, mode='predict')
                return pre_ms

        split = timer.attach(model_stages(model)) if self.split \
            else nullcontext()
        listen = timer.listen(model) if self.split else nullcontext()
        flops = count_flops(model) if (
            record and self.count_flops and path not in self.flops) \
            else nullcontext()
        with count_tokens(model.backbone) as counter, split, listen, \
                flops as flop_counts:
            model_ms, pre_ms = time_call(forward, self.device, clock)
        if flop_counts is not None:
            self.flops[path] = flop_counts
        if self.device.type == 'cuda':
            self.peak_mib = max(
                self.peak_mib,
                torch.cuda.max_memory_allocated(self.device) / 2**20)
        counts = counter.per_image()
        self.set_tokens(path, counts['tokens'].sum(),
                        counts['baseline_tokens'].sum())
        if not record:
            return
        stages_ms = timer.reset()
        entry = dict(pipeline_ms=pipeline_ms, model_ms=model_ms)
        if self.split:
            # Stage times are exclusive: the backbone stage holds what its
            # APT sub-stages (or the plain patch embedding) leave.
            backbone = sum(v for k, v in stages_ms.items() if k != 'neck')
            entry.update(
                preprocess_ms=pre_ms,
                backbone_ms=backbone,
                heads_ms=model_ms - pre_ms - backbone -
                stages_ms.get('neck', 0.),
                **{
                    f'{k}_ms': v
                    for k, v in stages_ms.items()
                })
        self.add(path, **entry)

    def summary(self, square_tokens: int) -> dict:
        per_image = self.medians()
        total = self.totals()
        tokens = self.total_tokens()
        gflops = {
            key: round(sum(f[key] for f in self.flops.values()) / 1e9, 2)
            for key in ('backbone', 'attention', 'model')
        } if self.flops else None
        return dict(
            gflops=gflops,
            img_s=round(self.img_s(), 4),
            median_ms=round(self.median(), 2),
            total_ms={
                k: round(v, 2)
                for k, v in total.items()
            },
            tokens=tokens,
            keep_ratio=round(tokens / square_tokens, 4),
            peak_mib=round(self.peak_mib, 1) if self.peak_mib else None,
            per_image={
                os.path.basename(p):
                dict(
                    tokens=self.tokens[p][0],
                    model_ms=round(m['model_ms'], 2),
                    times_ms=[round(t, 2) for t in self.times(p)])
                for p, m in per_image.items()
            })


def run(args: argparse.Namespace) -> None:
    """The whole-model benchmark of ``args`` (training with ``--train``)."""
    set_threads(args.threads)
    device = torch.device(args.device)
    apt_cfg, base_cfg, registry = load_config_pair(args.config, args.compare,
                                                   args.cfg_options)
    for cfg in (apt_cfg, base_cfg):
        apply_accelerate(cfg, args.accelerate)
    if args.train:
        return run_training(args, apt_cfg, base_cfg, registry, device)
    paths = image_paths(args.images, args.num_images, args.img_prefix)
    apt, baseline = build_model_pair(apt_cfg, base_cfg, registry,
                                     args.checkpoint, args.seed,
                                     args.trust_checkpoint)
    apt, baseline = apt.to(device), baseline.to(device)
    dtype = precision_dtype(args.dtype)
    split = not args.no_split
    clock = get_clock(args.clock, device)

    def make_arm(name: str, model, preprocessor, cfg) -> PipelineArm:
        return PipelineArm(name, model, preprocessor, test_pipeline(cfg),
                           device, dtype, split, clock, args.flops)

    arms = [
        make_arm('baseline', baseline, baseline.data_preprocessor, base_cfg)
    ]
    if args.baseline_pad == 'window':
        window = baseline.backbone.window_size * baseline.backbone.patch_size
        if not window:
            raise SystemExit('--baseline-pad window: the baseline backbone '
                             'has no windows (window_size 0)')
        arms.append(
            make_arm('baseline_window', baseline,
                     padded_preprocessor(base_cfg, registry, window, device),
                     base_cfg))
    arms.append(make_arm('apt', apt, apt.data_preprocessor, apt_cfg))
    if args.padding_free:
        largest = apt.backbone.tokenizer.largest_patch
        arms.append(
            make_arm('apt_nopad', apt,
                     padded_preprocessor(apt_cfg, registry, largest, device),
                     apt_cfg))

    # Accelerated: every image once per arm first (a new shape or token
    # bucket compiles or captures on its first call), not timed.
    warm_paths = paths if args.accelerate else paths[:1]
    for arm in arms:
        for _ in range(args.warmup):
            for path in warm_paths:
                arm.run(path, record=False)
    for rep in range(args.repeat):
        order = rotated(arms, rep)
        for path in paths:
            for arm in order:
                arm.run(path)
                entry, tokens = arm.entries[path][-1], arm.tokens[path][0]
                print(
                    f'[{rep + 1}/{args.repeat}] {arm.name:<16}'
                    f'{os.path.basename(path):<24}{tokens:>7} tokens '
                    f'{entry["model_ms"]:>10.0f} ms',
                    file=sys.stderr,
                    flush=True)
            if args.out and rep == 0:  # a partial run still leaves numbers
                done = paths.index(path) + 1
                _, partial = summarize(arms, args, device, done)
                with open(args.out, 'w') as f:
                    json.dump(
                        dict(partial, partial=done < len(paths)), f, indent=1)

    results, summary = summarize(arms, args, device, len(paths))
    report_table(results, args)
    print(f'speed-up {summary["speedup"]} (backbone '
          f'{summary["backbone_speedup"]}), token ratio '
          f'{summary["token_ratio"]}' +
          (f'; vs window-padded baseline {summary["speedup_vs_window"]} '
           f'(token ratio {summary["token_ratio_vs_window"]})'
           if 'speedup_vs_window' in summary else ''))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(summary, f, indent=1)
    if args.json:
        print(json.dumps(summary))


def summarize(arms: List[PipelineArm], args, device, num_images: int):
    """Per-arm results and the summary over the images run so far."""
    square_tokens = sum(t for _, t in arms[0].tokens.values())
    results = {arm.name: arm.summary(square_tokens) for arm in arms}
    split = not args.no_split

    def model_ms(arm: str) -> float:
        return results[arm]['total_ms']['model_ms']

    def tokens(arm: str) -> int:
        return results[arm]['tokens']

    base, aptr = results['baseline'], results['apt']
    summary = dict(
        baseline_img_s=base['img_s'],
        apt_img_s=aptr['img_s'],
        speedup=ratio(model_ms('baseline'), model_ms('apt')),
        backbone_speedup=ratio(base['total_ms']['backbone_ms'],
                               aptr['total_ms']['backbone_ms'])
        if split else None,
        token_ratio=ratio(tokens('baseline'), tokens('apt')),
        keep_ratio=aptr['keep_ratio'])
    if base['gflops'] and aptr['gflops']:
        summary.update(
            flops_ratio=ratio(base['gflops']['model'],
                              aptr['gflops']['model']),
            backbone_flops_ratio=ratio(base['gflops']['backbone'],
                                       aptr['gflops']['backbone']))
    if 'baseline_window' in results:
        summary.update(
            baseline_window_img_s=results['baseline_window']['img_s'],
            speedup_vs_window=ratio(
                model_ms('baseline_window'), model_ms('apt')),
            token_ratio_vs_window=ratio(
                tokens('baseline_window'), tokens('apt')))
    if 'apt_nopad' in results:
        summary.update(
            apt_nopad_img_s=results['apt_nopad']['img_s'],
            nopad_speedup=ratio(model_ms('baseline'), model_ms('apt_nopad')))
        if 'baseline_window' in results:
            summary.update(
                nopad_speedup_vs_window=ratio(
                    model_ms('baseline_window'), model_ms('apt_nopad')),
                nopad_token_ratio_vs_window=ratio(
                    tokens('baseline_window'), tokens('apt_nopad')))
    summary.update(
        config=args.config,
        compare=args.compare,
        images=num_images,
        repeat=args.repeat,
        device=str(device),
        dtype=args.dtype,
        clock=args.clock,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        arms=results)
    return results, summary


def report_table(results: Dict[str, dict], args) -> None:
    stages = [
        'pipeline', 'preprocess', 'backbone', 'tokenizer', 'embedding',
        'context', 'blocks', 'unpack', 'neck', 'heads'
    ]
    print(f'{len(next(iter(results.values()))["per_image"])} images x '
          f'{args.repeat} repeats, {args.device} {args.dtype}; sums over the '
          'images of per-image medians (ms)')
    print(f'{"arm":<17}{"img/s":>9}{"median":>9}{"tokens":>9}{"keep":>7}' +
          ''.join(f'{s[:9]:>10}' for s in stages))
    for name, r in results.items():
        cells = ''.join(f'{r["total_ms"].get(s + "_ms", float("nan")):>10.0f}'
                        for s in stages)
        print(f'{name:<17}{r["img_s"]:>9.3f}{r["median_ms"]:>9.0f}'
              f'{r["tokens"]:>9}{r["keep_ratio"]:>7.3f}{cells}')
