"""The GPU benchmark of the EVA-02 backbones (``tools/analysis/
gpu_benchmark.py``): every arm of one architecture, then the output
checks, the stage split, the overhead counts, the profile and training,
into a report written after every step.

Arms (batch 1, ``torch.no_grad``, autocast to the run's dtype):

* ``plain_square`` / ``plain_window``: the plain model on the square canvas
  / on the content padded only to the next window multiple;
* ``plain_square_graph`` / ``plain_window_graph``: the same as CUDA graphs
  (one per input shape; CUDA only);
* ``plain_square_compiled``: ``torch.compile(mode='reduce-overhead')``
  (CUDA only, ``--no-compile`` skips it);
* ``apt_square``: APT on the square canvas (torch's CUDA varlen attention
  when available); ``apt_nopad``: the content padded only to the largest
  patch; ``apt_nomerge``: every scale disabled (APT's fixed overhead);
* ``apt_static``: APT's static-shape mode (``backbone.apt.pack_size``),
  packed lengths rounded up to a multiple of the bucket;
  ``apt_static_graph``: the same as CUDA graphs, one per bucket;
* ``apt_square_padded``: APT with the padded SDPA plan (CUDA with a varlen
  kernel only).

Needs torch, numpy, Pillow, mmengine and mmapt (no mmcv / mmdet / mmseg).
"""
import gc
import os
import sys
import traceback
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import torch

from mmapt.apis.images import list_images, load_rgb, sample_photo_paths
from mmapt.engine.precision import precision_dtype
from mmapt.models import APTEVA02, EVA02
from mmapt.models.layers import attention
from .arch_summary import ARM_NAMES, arch_summary, attention_path
from .arm_checks import overhead_counts, run_checks, stage_splits
from .backbone_training import train_arms
from .backbones import (bucket_size, build_backbone_pair, image_name,
                        packed_to, packed_tokens, padded_attention_scope,
                        photo_views, same_weights_copy)
from .budget import Budget
from .core import Arm, environment, settings_of
from .cuda import GraphCache, autocast_for, profile_forward
from .report import gpu_text_summary, write_report
from .runner import (ArmOutcomes, BackboneArm, arm_summary, log, prepare_arms,
                     time_arms)

# Backbone settings of configs/eva02_vitdet_coco{,_large}.py.
ARCHS = {
    'base':
    dict(arch='base', window_size=32, global_attn_indexes=(1, 3, 5, 7, 9, 11)),
    'large':
    dict(
        arch='large',
        window_size=32,
        global_attn_indexes=(2, 5, 8, 11, 14, 17, 20, 23)),
    # --quick: 4 blocks of 64 channels, 128-px windows on a 256 canvas.
    'quick':
    dict(
        arch=dict(embed_dims=64, num_layers=4, num_heads=2, scale_mlp=True),
        window_size=8,
        global_attn_indexes=(1, 3)),
}
LARGEST_PATCH = 128
# Budget the compiled arm must have left to start: compiling the plain
# EVA-02-L forward (inductor + CUDA-graph trees) is expected to take a
# minute or two, and a compile cannot stop midway.
COMPILE_NEEDS_S = 120.


# ------------------------------------------------------------------ inputs
def load_views(args) -> List[dict]:
    """Per image: name, the square canvas, the window-padded and the
    padding-free (largest-patch-padded) views."""
    try:
        paths = list_images(args.images) if args.images else \
            sample_photo_paths()
    except FileNotFoundError as err:
        raise SystemExit(f'error: {err}')
    window_px = ARCHS[args.archs[0]]['window_size'] * 16
    return [
        dict(
            name=image_name(path),
            **photo_views(
                load_rgb(path), args.canvas, window_px, LARGEST_PATCH))
        for path in paths[:args.num_images]
    ]


def build_models(name: str, args, device: torch.device):
    """Plain, APT and no-merge APT backbones with the same random weights."""
    cfg = dict(
        img_size=args.canvas, patch_size=16, out_indices=(-1, ), **ARCHS[name])
    plain, apt = build_backbone_pair(EVA02, APTEVA02, cfg,
                                     tuple(args.thresholds), device)
    nomerge = same_weights_copy(apt, APTEVA02, cfg, thresholds=(-1, -1, -1))
    return plain, apt, nomerge


# ------------------------------------------------------------------ arms
class ArchBench:
    """The arms of one architecture and what they need."""

    def __init__(self, name: str, args, views: List[dict],
                 device: torch.device) -> None:
        self.name = name
        self.args = args
        self.device = device
        self.dtype = precision_dtype(args.dtype)
        self.plain, self.apt, self.nomerge = build_models(name, args, device)
        self.inputs = {
            view['name']: {
                key: view[key].to(device)
                for key in ('square', 'window', 'nopad')
            }
            for view in views
        }
        self.cuda = device.type == 'cuda'
        self.varlen = self.cuda and attention.cuda_varlen_enabled() and \
            args.dtype != 'fp32'
        self.buckets: Dict[str, int] = {}  # image -> pack size
        self.apt_tokens: Dict[str, int] = {}  # image -> apt_square tokens
        self.outcomes = ArmOutcomes()
        self.skipped = self.outcomes.skipped

    def eager(self, model, padded: bool = False) -> Callable:

        def make(x):

            def run():
                with autocast_for(self.device, self.dtype), \
                        (padded_attention_scope(model) if padded
                         else nullcontext()):
                    return model(x)

            return run

        return make

    def static_eager(self, x):
        pack = self.bucket_of(x)

        def run():
            with autocast_for(self.device, self.dtype), \
                    packed_to(self.apt, pack):
                return self.apt(x)

        return run

    def bucket_of(self, x: torch.Tensor) -> int:
        image = self.image_of(x)
        if image not in self.buckets:
            apt_tokens = self.apt_tokens.get(image)
            if apt_tokens is None:
                raise RuntimeError('static mode: no token count of the '
                                   'apt_square arm for ' + image)
            square = x.shape[-2] * x.shape[-1] // self.apt.patch_size**2
            self.buckets[image] = bucket_size(
                packed_tokens(self.apt, apt_tokens), self.args.bucket,
                packed_tokens(self.apt, square))
        return self.buckets[image]

    def image_of(self, x: torch.Tensor) -> str:
        for image, views in self.inputs.items():
            if any(v is x for v in views.values()):
                return image
        raise KeyError('input not one of the benchmark views')

    def graphed(self, cache: GraphCache, key_of: Callable) -> Callable:

        def make(x):
            key = key_of(x)

            def run():
                return cache.get(key, x)(x)

            return run

        return make

    def arms(self) -> List[BackboneArm]:
        arms = [
            BackboneArm('plain_square', self.plain, 'square',
                        self.eager(self.plain)),
            BackboneArm('plain_window', self.plain, 'window',
                        self.eager(self.plain)),
            BackboneArm('apt_square', self.apt, 'square',
                        self.eager(self.apt)),
            BackboneArm('apt_nopad', self.apt, 'nopad', self.eager(self.apt)),
            BackboneArm('apt_nomerge', self.nomerge, 'square',
                        self.eager(self.nomerge)),
        ]
        if self.varlen:
            arms.append(
                BackboneArm('apt_square_padded', self.apt, 'square',
                            self.eager(self.apt, padded=True)))
        else:
            self.skipped['apt_square_padded'] = (
                'needs CUDA, fp16/bf16 and torch\'s varlen kernel (the '
                'default APT path is then the padded one already)')
        arms.append(
            BackboneArm('apt_static', self.apt, 'square', self.static_eager))
        if not self.cuda:
            for arm in ('plain_square_graph', 'plain_window_graph',
                        'apt_static_graph', 'plain_square_compiled'):
                self.skipped.setdefault(
                    arm, 'CUDA graphs / torch.compile(mode="reduce-'
                    'overhead") need a CUDA device; not run on ' +
                    self.device.type)
            return arms
        plain_graphs = GraphCache(lambda shape: self._graph_fn(self.plain))
        for view in ('square', 'window'):
            arms.append(
                BackboneArm(
                    f'plain_{view}_graph',
                    self.plain,
                    view,
                    self.graphed(plain_graphs, lambda x: tuple(x.shape)),
                    count_tokens=False,
                    tokens_from=f'plain_{view}'))
        apt_graphs = GraphCache(lambda pack: self._graph_fn(self.apt, pack))
        arms.append(
            BackboneArm(
                'apt_static_graph',
                self.apt,
                'square',
                self.graphed(apt_graphs, self.bucket_of),
                count_tokens=False,
                tokens_from='apt_static'))
        if self.args.no_compile:
            self.skipped['plain_square_compiled'] = '--no-compile'
        else:
            compiled = torch.compile(self.plain, mode='reduce-overhead')
            arms.append(
                BackboneArm(
                    'plain_square_compiled',
                    self.plain,
                    'square',
                    self.eager(compiled),
                    count_tokens=False,
                    tokens_from='plain_square',
                    compiled=True,
                    needs_s=COMPILE_NEEDS_S))
        return arms

    def _graph_fn(self, model, pack: Optional[int] = None) -> Callable:

        def fn(x):
            with autocast_for(self.device, self.dtype, cache=False):
                if pack is None:
                    return model(x)
                with packed_to(model, pack):
                    return model(x)

        return fn


def arm_entry(record: Arm, square_tokens: Optional[int], info: dict) -> dict:
    """An arm's summary with the kernel it ran and its peak memory."""
    entry = arm_summary(record, square_tokens)
    entry.update(
        attention_kernel=info.get('attention', {}).get('kernel'),
        peak_mib=info.get('peak_mib'))
    return entry


def optional_part(name: str, budget: Budget, out: dict, run: Callable):
    """``run()`` unless the budget is spent (then ``out['cut'][name]``)."""
    if budget.over():
        out['cut'][name] = (f'not run: over the time budget '
                            f'({budget.seconds:g} s)')
        return None
    return run()


def bench_arch(name: str, args, views: List[dict], device: torch.device,
               budget: Budget, report: dict, write: Callable[[],
                                                             None]) -> None:
    """Every arm of one architecture, then the checks, the stage split,
    the overhead counts, the profile and training, into
    ``report['archs'][name]``, written (``write()``) after each step."""
    bench = ArchBench(name, args, views, device)
    outcomes = bench.outcomes
    records: Dict[str, Arm] = {}  # the arms ready, by name
    all_arms = bench.arms()
    out = report['archs'][name] = dict(
        status='warming up',
        arms={},
        arm_info=outcomes.info,
        skipped=outcomes.skipped,
        failed=outcomes.failed,
        cut=outcomes.cut)
    write()

    def step(status: str) -> None:
        out['attention_path'] = attention_path(outcomes.info)
        out['summary'] = arch_summary(out['arms'], outcomes.info)
        out['status'] = status
        write()

    # Token counts of apt_square first: the static arms' buckets need them;
    # compiling is the slow part: last.
    order = sorted(
        all_arms, key=lambda a: (a.name != 'apt_square', a.compiled))
    with torch.no_grad():
        ready = prepare_arms(
            order[:1],
            bench.inputs,
            args.warmup,
            records,
            outcomes,
            device,
            on_arm=lambda _: write())
        apt_record = records.get('apt_square')
        bench.apt_tokens = {} if apt_record is None else {
            image: tokens
            for image, (tokens, _) in apt_record.tokens.items()
        }
        ready += prepare_arms(order[1:], bench.inputs, args.warmup, records,
                              outcomes, device, budget, lambda _: write())
        ready.sort(key=lambda a: ARM_NAMES.index(a.name))
        log(f'{name}: timing {[a.name for a in ready]}')
        square = records.get('plain_square')
        square_tokens = square.total_baseline_tokens() if square else None

        def on_repeat(done: int) -> None:
            out['repeats_done'] = done
            out['arms'] = {
                a.name: arm_entry(a, square_tokens, outcomes.info[a.name])
                for a in ready
            }
            step(f'timed {done} of {args.repeat} repeats')

        done = time_arms(
            ready,
            bench.inputs,
            args.repeat,
            device,
            budget=budget,
            on_repeat=on_repeat)
        if done < args.repeat:
            out['timing_cut'] = (f'cut by the time budget after {done} of '
                                 f'{args.repeat} repeats')
        by_name = {a.name: a for a in ready}
        step('checking outputs')
        out['checks'] = run_checks(bench.inputs, by_name)
        step('splitting stages')
        out['stages'] = stage_splits(bench.inputs, by_name, device)
        step('counting overhead')
        image = next(iter(bench.inputs))
        x = bench.inputs[image]['square']
        runs = dict(
            plain=(bench.plain, lambda: bench.plain(x)),
            apt=(bench.apt, lambda: bench.apt(x)))
        if 'apt_static' in by_name:
            static = by_name['apt_static']
            runs['apt_static'] = (static.model, static.make(x))
        out['overhead'] = overhead_counts(image, runs, device, bench.dtype)
        if report.get('profiled') is None:
            report['profiled'] = name
            step('profiling')
            out['profile'] = optional_part(
                'profile', budget, out, lambda: {
                    arm: profile_arm(by_name[arm], bench.inputs[image], device)
                    for arm in ('apt_square', 'apt_static', 'plain_square')
                    if arm in by_name
                })
    if name in args.train_archs:
        step('training')
        out['training'] = optional_part(
            'training', budget, out, lambda: train_arms(
                dict(plain=bench.plain, apt=bench.apt), bench.inputs, device,
                bench.dtype, args.train_repeat, budget))
    step('done')


def profile_arm(arm: BackboneArm, views: Dict[str, torch.Tensor],
                device: torch.device) -> dict:
    try:
        return profile_forward(arm.make(views[arm.view]), device, arm.model)
    except Exception as err:  # noqa: BLE001 - reported in the profile
        return dict(error=f'{type(err).__name__}: {err}')


def close_arch(report: dict, name: str, train_archs: List[str],
               why: str) -> None:
    """After a stop or an error: whatever of architecture ``name`` was
    neither timed nor left out goes to ``cut`` with ``why``; an
    architecture not begun is listed under ``not_started``."""
    arch = report['archs'].get(name)
    if arch is None:
        report.setdefault('not_started', []).append(name)
        return
    if arch['status'] == 'done' or arch['status'].startswith('stopped'):
        return
    outcomes = ArmOutcomes(arch['skipped'], arch['failed'], arch['cut'])
    for arm in outcomes.unaccounted(ARM_NAMES, list(arch['arms'])):
        arch['cut'][arm] = f'{why} before it was timed'
    wanted = dict(
        profile=report.get('profiled') in (None, name),
        training=name in train_archs)
    for part in ('profile', 'training'):
        if wanted[part] and not arch.get(part) and part not in arch['cut']:
            arch['cut'][part] = why
    arch['status'] = f'stopped (at: {arch["status"]}): {why}'


def run_gpu_benchmark(args) -> None:
    """The whole run of ``gpu_benchmark.py``'s parsed ``args``."""
    device = torch.device(args.device)
    budget = Budget(args.budget_s)
    views = load_views(args)
    env = environment(device)
    env['varlen_kernel_importable'] = attention.cuda_varlen_enabled()
    report = dict(
        environment=env,
        settings=dict(
            **settings_of(args, 'canvas', 'dtype', 'thresholds', 'bucket',
                          'repeat', 'warmup', 'train_repeat', 'budget_s'),
            batch_size=1,
            command=' '.join(sys.argv),
            images=[
                dict(
                    name=v['name'],
                    size=v['size'],
                    content=v['content'],
                    window_view=list(v['window'].shape[2:]),
                    nopad_view=list(v['nopad'].shape[2:])) for v in views
            ]),
        archs={})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def write() -> None:
        report['seconds'] = round(budget.elapsed(), 1)
        write_report(report, args.out)

    try:
        for name in args.archs:
            try:
                bench_arch(name, args, views, device, budget, report, write)
            except Exception as err:  # noqa: BLE001 - the next arch still runs
                log(traceback.format_exc())
                close_arch(report, name, args.train_archs,
                           f'{type(err).__name__}: {err}')
            if device.type == 'cuda':  # free the models, graphs, compiles
                gc.collect()
                torch._dynamo.reset()  # its CUDA-graph trees' memory too
                torch.cuda.empty_cache()
    except KeyboardInterrupt:  # gpu_benchmark.sh's time limit
        why = 'the run was stopped (SIGINT)'
        report['interrupted'] = why
        for name in args.archs:
            close_arch(report, name, args.train_archs, why)
        write()
        print(gpu_text_summary(report))
        raise SystemExit(f'stopped; wrote {args.out} with what was done')
    write()
    print(gpu_text_summary(report))
    print(f'\nwrote {args.out} in {report["seconds"]:.0f} s')
