"""One-command GPU benchmark of the EVA-02 backbones: APT against plain.

    bash tools/analysis/gpu_benchmark.sh OUT_DIR --images data/photos
    python tools/analysis/gpu_benchmark.py --images DIR --out OUT_DIR
    python tools/analysis/gpu_benchmark.py --device cpu --quick --images DIR \
        --out FILE                   # tiny model, small canvas: a smoke test

Needs torch, numpy, Pillow, mmengine and mmapt (no mmcv / mmdet / mmseg).
Images: ``--images DIR`` (JPEG/PNG or (H, W, 3) uint8 ``.npy``), else the
photographs scikit-image ships (``tools/misc/sample_photos.py`` copies
them). Every image is prepared like the detection test pipeline (long side
to the canvas, padded to a square).

For each architecture (EVA-02-B and -L at 1536 by default; ViTDet windows of
32 tokens and the detection configs' global blocks), plain and APT share the
same random weights, run under autocast (``--dtype``, bf16 by default) with
batch 1, and are timed on these arms (inference, ``torch.no_grad``):

* ``plain_square``: the plain model on the square canvas (the configs'
  test view);
* ``plain_window``: the plain model on the content padded only to the next
  window multiple (the fair baseline for a non-square photograph);
* ``plain_square_graph`` / ``plain_window_graph``: the same as CUDA graphs
  (one per input shape; CUDA only);
* ``plain_square_compiled``: ``torch.compile(mode='reduce-overhead')``
  (inductor kernels + CUDA graphs; CUDA only, ``--no-compile`` skips it);
* ``apt_square``: APT (thresholds 2, 2, 0.3) on the square canvas, with
  torch's CUDA varlen attention when available;
* ``apt_nopad``: APT padding-free: the content padded only to the largest
  patch (128 px), windows partial at the border;
* ``apt_nomerge``: APT with every scale disabled on the square canvas (its
  cost over ``plain_square`` is APT's fixed overhead);
* ``apt_static``: APT in its static-shape mode (``backbone.apt.pack_size``),
  each image's packed length rounded up to a multiple of ``--bucket``;
* ``apt_static_graph``: the same as CUDA graphs, one per bucket (CUDA only;
  the bucket of an image comes from its token count, known before timing);
* ``apt_square_padded``: APT with the padded SDPA fallback (CUDA with a
  varlen kernel only).

Arms that cannot run here are listed under ``skipped`` with the reason;
arms that fail while warming up under ``failed`` with the error. Repeats
are interleaved (every repeat runs every image through every arm, rotating
which arm goes first); GPU times are CUDA events around each forward after
a synchronize, CPU times wall clock.

Also measured: outputs of the graph / static / no-merge arms against their
eager references (``checks``); per-stage times of APT's forward (stage
boundaries as CUDA events, no synchronize) and the tokenizer's share; the
aten ops and host syncs of one forward per stage (``mmapt.utils.overhead``,
CUDA sync debug mode on a GPU); a ``torch.profiler`` table of one APT
forward with GPU idle time (first architecture); and training speed, a
forward + backward per arm (``--train-archs``, EVA-02-B by default).

Writes the JSON (``--out``) after every architecture and a Markdown summary
next to it (``.md``).
"""
import argparse
import importlib.util
import json
import os
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional

import torch

from mmapt.benchmark import (NotAvailable, bucket_size, build_backbone_pair,
                             count_forward_overhead, packed_to, photo_views,
                             static_mode_available)
from mmapt.benchmark.backbones import (image_name, packed_tokens,
                                       padded_attention_scope,
                                       same_weights_copy)
from mmapt.benchmark.core import (ArmRecord, compare_outputs, environment,
                                  interleaved, ratio)
from mmapt.benchmark.cuda import GraphCache, autocast_for, profile_forward
from mmapt.benchmark.report import gpu_markdown
from mmapt.benchmark.runner import (BackboneArm, arm_summary, log,
                                    prepare_arms, split_of, time_arms)
from mmapt.engine.preflight import InputError, check_writable_file
from mmapt.models import APTEVA02, EVA02
from mmapt.models.layers import attention
from mmapt.tokenizer.prepare import list_images, load_rgb, sample_photo_paths
from mmapt.utils.memory import peak_memory_mib
from mmapt.utils.timing import time_call

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
DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
LARGEST_PATCH = 128
TRAIN_ARMS = ('plain_square', 'plain_window', 'apt_square', 'apt_nopad')
# Summary ratios: key -> (numerator arm, denominator arm).
SPEEDUPS = dict(
    speedup_vs_plain_square=('plain_square', 'apt_square'),
    speedup_vs_plain_window=('plain_window', 'apt_square'),
    nopad_speedup_vs_plain_window=('plain_window', 'apt_nopad'),
    nopad_speedup_vs_plain_square=('plain_square', 'apt_nopad'),
    varlen_speedup_vs_padded=('apt_square_padded', 'apt_square'),
    static_graph_speedup_vs_plain_square_graph=('plain_square_graph',
                                                'apt_static_graph'))
TOKEN_RATIOS = dict(
    token_ratio=('plain_square', 'apt_square'),
    token_ratio_vs_plain_window=('plain_window', 'apt_square'),
    nopad_token_ratio_vs_plain_window=('plain_window', 'apt_nopad'))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--images',
        help='folder of images (.jpg/.png/.npy); '
        'default: the scikit-image sample photographs')
    parser.add_argument(
        '--out',
        required=True,
        help='JSON file to write (a folder: FOLDER/gpu_benchmark.json); '
        'the Markdown summary goes next to it')
    parser.add_argument('--device', default='cuda')
    parser.add_argument(
        '--dtype',
        choices=sorted(DTYPES),
        default='bf16',
        help='autocast dtype (fp32: no autocast)')
    parser.add_argument(
        '--archs',
        nargs='+',
        default=['base', 'large'],
        choices=['base', 'large'])
    parser.add_argument(
        '--train-archs',
        nargs='*',
        default=['base'],
        choices=['base', 'large'],
        help='architectures whose forward + backward is timed too')
    parser.add_argument('--canvas', type=int, default=1536)
    parser.add_argument(
        '--thresholds', type=float, nargs='+', default=[2.0, 2.0, 0.3])
    parser.add_argument(
        '--bucket',
        type=int,
        default=1024,
        help='static mode: packed lengths rounded up to a multiple of this '
        '(at most the square canvas\'s count)')
    parser.add_argument(
        '--repeat',
        type=int,
        default=10,
        help='timed forwards per image and arm')
    parser.add_argument(
        '--warmup',
        type=int,
        default=2,
        help='untimed forwards per image and arm')
    parser.add_argument(
        '--train-repeat',
        type=int,
        default=3,
        help='timed forward + backward per image and training arm')
    parser.add_argument(
        '--num-images', type=int, default=None, help='use the first N images')
    parser.add_argument(
        '--no-compile',
        action='store_true',
        help='skip the torch.compile arm of the plain model')
    parser.add_argument(
        '--budget-s',
        type=float,
        default=450.,
        help='optional parts (compile, profile, training) are skipped once '
        'the run has taken this long')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny 4-block model on a 256 canvas, 2 repeats '
        '(a smoke test of the script, e.g. on CPU)')
    args = parser.parse_args(argv)
    if args.quick:
        args.archs = ['quick']
        args.train_archs = ['quick'] if args.train_archs else []
        args.canvas = 256
        args.bucket = min(args.bucket, 64)
        args.repeat = min(args.repeat, 2)
        args.warmup = min(args.warmup, 1)
        args.train_repeat = min(args.train_repeat, 1)
    if args.repeat < 1 or args.train_repeat < 1:
        parser.error('--repeat and --train-repeat must be >= 1')
    if len(args.thresholds) != 3:
        parser.error('--thresholds takes 3 values (patch sizes 16/32/64/128)')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU visible to torch '
                     f'{torch.__version__}; use --device cpu --quick for a '
                     'smoke test')
    if os.path.isdir(args.out) or args.out.endswith(os.sep):
        args.out = os.path.join(args.out, 'gpu_benchmark.json')
    try:
        check_writable_file(args.out, '--out')
    except InputError as err:
        parser.error(str(err))
    return args


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
        self.dtype = DTYPES[args.dtype]
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
        self.static = static_mode_available(self.apt)
        self.buckets: Dict[str, int] = {}  # image -> pack size
        self.apt_tokens: Dict[str, int] = {}  # image -> apt_square tokens
        self.skipped: Dict[str, str] = {}

    def eager(self, model, padded: bool = False) -> Callable:

        def make(x):

            def run():
                with autocast_for(self.device, self.dtype), \
                        (padded_attention_scope() if padded
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
        if self.static:
            arms.append(
                BackboneArm('apt_static', self.apt, 'square',
                            self.static_eager))
        else:
            why = ('the static-shape mode (backbone.apt.pack_size) is not '
                   'available in this build of mmapt')
            self.skipped['apt_static'] = why
            if self.cuda:
                self.skipped['apt_static_graph'] = why
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
        if self.static:
            apt_graphs = GraphCache(
                lambda pack: self._graph_fn(self.apt, pack))
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
                    tokens_from='plain_square'))
        return arms

    def _graph_fn(self, model, pack: Optional[int] = None) -> Callable:

        def fn(x):
            with autocast_for(self.device, self.dtype, cache=False):
                if pack is None:
                    return model(x)
                with packed_to(model, pack):
                    return model(x)

        return fn


def run_checks(bench: ArchBench, arms: Dict[str, BackboneArm]) -> dict:
    """Outputs of the derived arms against their eager references, per
    image: graphs vs eager, static vs unpadded, no-merge APT vs plain,
    padded vs varlen attention."""
    pairs = [('plain_square_graph', 'plain_square'),
             ('plain_window_graph', 'plain_window'),
             ('plain_square_compiled', 'plain_square'),
             ('apt_static', 'apt_square'), ('apt_static_graph', 'apt_static'),
             ('apt_nomerge', 'plain_square'),
             ('apt_square_padded', 'apt_square')]
    checks = {}
    with torch.no_grad():
        for arm, reference in pairs:
            if arm not in arms or reference not in arms:
                continue
            worst = None
            for image, views in bench.inputs.items():
                out = arms[arm].make(views[arms[arm].view])()[0].clone()
                ref = arms[reference].make(
                    views[arms[reference].view])()[0].clone()
                diff = compare_outputs(out, ref)
                if worst is None or diff['rel_l2_diff'] > worst['rel_l2_diff']:
                    worst = dict(image=image, **diff)
            checks[f'{arm}_vs_{reference}'] = worst
    return checks


def stage_splits(bench: ArchBench, arms: Dict[str, BackboneArm]) -> dict:
    """Per APT arm (eager), stage times of one forward per image and the
    tokenizer's share of the forward."""
    out = {}
    for name in ('apt_square', 'apt_static', 'plain_square'):
        if name not in arms:
            continue
        arm = arms[name]
        per_image, total_ms, stage_ms = {}, 0., {}
        for image, views in bench.inputs.items():
            ms, stages = split_of(
                arm.make(views[arm.view]), bench.device, time.perf_counter)
            per_image[image] = dict(
                forward_ms=round(ms, 3),
                **{
                    k: round(v, 3)
                    for k, v in stages.items()
                })
            total_ms += ms
            for k, v in stages.items():
                stage_ms[k] = stage_ms.get(k, 0.) + v
        out[name] = dict(
            forward_ms=round(total_ms, 3),
            stages_ms={
                k: round(v, 3)
                for k, v in stage_ms.items()
            },
            tokenizer_share=round(stage_ms.get('tokenizer', 0.) / total_ms, 4),
            outside_blocks_share=round(
                (total_ms - stage_ms.get('blocks', 0.)) / total_ms, 4),
            per_image=per_image)
    return out


def overhead_counts(bench: ArchBench) -> dict:
    """Aten ops and host syncs of one forward of the first image, plain vs
    APT (vs APT static)."""
    image = next(iter(bench.inputs))
    x = bench.inputs[image]['square']
    result = dict(image=image)
    try:
        with autocast_for(bench.device, bench.dtype):
            result['plain'] = count_forward_overhead(bench.plain, x)
            result['apt'] = count_forward_overhead(bench.apt, x)
            if bench.static:
                with packed_to(bench.apt, bench.bucket_of(x)):
                    result['apt_static'] = count_forward_overhead(bench.apt, x)
    except NotAvailable as err:
        result['error'] = str(err)
    return result


def train_arms(bench: ArchBench, args) -> dict:
    """A forward + backward per arm (the backbones in train mode, autocast,
    loss = mean of the output), interleaved like inference."""
    models = dict(plain=bench.plain, apt=bench.apt)
    views = dict(
        plain_square='square',
        plain_window='window',
        apt_square='square',
        apt_nopad='nopad')

    def make(name: str, x: torch.Tensor) -> Callable:
        model = models[name.split('_')[0]]

        def step():
            with autocast_for(bench.device, bench.dtype):
                outs = model(x)
            loss = sum(o.float().mean() for o in outs)
            loss.backward()
            model.zero_grad(set_to_none=True)

        return step

    records: Dict[str, ArmRecord] = {}
    failed = {}
    for model in models.values():
        model.train()
    try:
        calls = {}
        for name in TRAIN_ARMS:
            try:
                for image, vs in bench.inputs.items():
                    calls[name, image] = make(name, vs[views[name]])
                    calls[name, image]()  # warm-up
                records[name] = ArmRecord(name)
            except Exception as err:  # noqa: BLE001
                failed[name] = f'{type(err).__name__}: {err}'
        ready = [n for n in TRAIN_ARMS if n in records]
        for _, image, name in interleaved(ready, list(bench.inputs),
                                          args.train_repeat):
            ms, _ = time_call(calls[name, image], bench.device)
            records[name].add(image, step_ms=ms)
    finally:
        for model in models.values():
            model.eval()
            model.zero_grad(set_to_none=True)
    arms = {
        name: arm_summary(r, None, key='step_ms')
        for name, r in records.items()
    }
    totals = {name: a['total_ms'] for name, a in arms.items()}
    return dict(
        arms=arms,
        failed=failed,
        summary=dict(
            speedup_vs_plain_square=ratio(
                totals.get('plain_square'), totals.get('apt_square')),
            nopad_speedup_vs_plain_window=ratio(
                totals.get('plain_window'), totals.get('apt_nopad'))))


def bench_arch(name: str, args, views: List[dict], device: torch.device,
               start: float, report: dict) -> dict:
    bench = ArchBench(name, args, views, device)
    records: Dict[str, ArmRecord] = {}
    failed: Dict[str, str] = {}
    all_arms = bench.arms()
    # Token counts of apt_square first: the static arms' buckets need them.
    order = sorted(all_arms, key=lambda a: a.name != 'apt_square')
    with torch.no_grad():
        ready = prepare_arms(order[:1], bench.inputs, args.warmup, records,
                             failed)
        bench.apt_tokens = {
            image: t
            for image, (
                t,
                _) in records.get('apt_square', ArmRecord('')).tokens.items()
        }
        # Compiling is the slow part: last, and only within the budget.
        rest = sorted(order[1:], key=lambda a: a.name.endswith('compiled'))
        ready += prepare_arms(
            rest, bench.inputs, args.warmup, records, failed,
            lambda: time.perf_counter() - start > args.budget_s)
        ready.sort(key=lambda a: [x.name for x in all_arms].index(a.name))
        log(f'{name}: timing {[a.name for a in ready]}')
        time_arms(ready, bench.inputs, args.repeat, device, records)
        by_name = {a.name: a for a in ready}
        square_tokens = records['plain_square'].total_baseline_tokens()
        result = {}
        first = next(iter(bench.inputs))
        for arm in ready:
            result[arm.name] = arm_summary(records[arm.name], square_tokens)
            result[arm.name]['peak_mib'] = round(
                peak_memory_mib(
                    arm.make(bench.inputs[first][arm.view]), device), 1)
        checks = run_checks(bench, by_name)
        splits = stage_splits(bench, by_name)
        counts = overhead_counts(bench)
    profile = None
    if report.get('profiled') is None:
        if time.perf_counter() - start < args.budget_s:
            report['profiled'] = name
            profile = {}
            with torch.no_grad():
                for arm in ('apt_square', 'apt_static', 'plain_square'):
                    if arm in by_name:
                        try:
                            profile[arm] = profile_forward(
                                by_name[arm].make(
                                    bench.inputs[first][by_name[arm].view]),
                                device)
                        except Exception as err:  # noqa: BLE001
                            profile[arm] = dict(
                                error=f'{type(err).__name__}: {err}')
    training = None
    if name in args.train_archs:
        if time.perf_counter() - start < args.budget_s:
            training = train_arms(bench, args)
        else:
            bench.skipped['training'] = f'over --budget-s {args.budget_s}'

    def total(arm: str) -> Optional[float]:
        return result[arm]['total_ms'] if arm in result else None

    def tokens(arm: str) -> Optional[int]:
        return result[arm]['tokens'] if arm in result else None

    plain_arms = [
        a for a in result
        if a.startswith('plain_square') or a.startswith('plain_window')
    ]
    fastest_plain = min(plain_arms, key=total) if plain_arms else None
    apt_arms = [
        a for a in result
        if a.startswith('apt_') and a not in ('apt_nomerge',
                                              'apt_square_padded')
    ]
    fastest_apt = min(apt_arms, key=total) if apt_arms else None
    summary = {
        key: ratio(total(num), total(den))
        for key, (num, den) in SPEEDUPS.items()
    }
    summary.update({
        key: ratio(tokens(num), tokens(den))
        for key, (num, den) in TOKEN_RATIOS.items()
    })
    summary.update(
        nomerge_overhead=(round(
            total('apt_nomerge') / total('plain_square') -
            1, 4) if 'apt_nomerge' in result else None),
        fastest_plain=fastest_plain,
        fastest_apt=fastest_apt,
        fastest_apt_vs_fastest_plain=ratio(
            total(fastest_plain), total(fastest_apt)))
    attention_path = 'cpu padded SDPA (no varlen kernel off CUDA)'
    if bench.cuda:
        attention_path = ('torch.nn.attention.varlen (flash varlen)'
                          if attention.cuda_varlen_enabled()
                          and args.dtype != 'fp32' else
                          'padded SDPA fallback (torch varlen kernel '
                          'unavailable or failed, or fp32)')
    if bench.buckets:
        summary['buckets'] = dict(bench.buckets)
    return dict(
        summary=summary,
        attention_path=attention_path,
        varlen_vs_padded=[checks['apt_square_padded_vs_apt_square']]
        if 'apt_square_padded_vs_apt_square' in checks else [],
        checks=checks,
        stages=splits,
        overhead=counts,
        profile=profile,
        training=training,
        skipped=bench.skipped,
        failed=failed,
        arms=result)


# ------------------------------------------------------------------ report
def print_summary(report: dict) -> None:
    env = report['environment']
    print(f'torch {env["torch"]}, device {env["device"]}' +
          (f' ({env["gpu"]}, CUDA {env["cuda"]})' if 'gpu' in env else '') +
          f', dtype {report["settings"]["dtype"]}')
    for name, arch in report['archs'].items():
        print(f'\nEVA-02 {name}: attention path: {arch["attention_path"]}')
        print(f'{"arm":<24}{"img/s":>9}{"median ms":>11}{"tokens":>9}'
              f'{"keep":>7}{"peak MiB":>10}')
        for arm, r in arch['arms'].items():
            keep = f'{r["keep_ratio"]:>7.3f}' if r['keep_ratio'] else \
                f'{"-":>7}'
            print(f'{arm:<24}{r["img_s"]:>9.2f}{r["median_ms"]:>11.2f}'
                  f'{r["tokens"]!s:>9}{keep}{r["peak_mib"]:>10.0f}')
        for arm, why in arch['skipped'].items():
            print(f'skipped {arm}: {why}')
        for arm, why in arch['failed'].items():
            print(f'failed {arm}: {why}')
        s = arch['summary']
        print(f'APT speed-up vs plain square {s["speedup_vs_plain_square"]}, '
              f'vs plain window-padded {s["speedup_vs_plain_window"]}; '
              f'token ratio {s["token_ratio"]} (vs window-padded '
              f'{s["token_ratio_vs_plain_window"]}); padding-free APT vs '
              f'plain window-padded {s["nopad_speedup_vs_plain_window"]} '
              f'(token ratio {s["nopad_token_ratio_vs_plain_window"]}); '
              f'fastest APT ({s["fastest_apt"]}) vs fastest plain '
              f'({s["fastest_plain"]}) {s["fastest_apt_vs_fastest_plain"]}; '
              f'no-merge overhead {s["nomerge_overhead"]}')
        if 'apt_square' in arch['stages']:
            st = arch['stages']['apt_square']
            print(f'tokenizer share of the APT forward '
                  f'{st["tokenizer_share"]:.1%}, outside the blocks '
                  f'{st["outside_blocks_share"]:.1%}')
        if arch['training']:
            t = arch['training']['summary']
            print(f'training (forward + backward): APT vs plain square '
                  f'{t["speedup_vs_plain_square"]}, padding-free APT vs '
                  f'plain window-padded {t["nopad_speedup_vs_plain_window"]}')


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    views = load_views(args)
    env = environment(device)
    env['varlen_kernel_importable'] = importlib.util.find_spec(
        'torch.nn.attention.varlen') is not None if hasattr(
            torch.nn, 'attention') else False
    report = dict(
        environment=env,
        settings=dict(
            canvas=args.canvas,
            dtype=args.dtype,
            thresholds=args.thresholds,
            bucket=args.bucket,
            repeat=args.repeat,
            warmup=args.warmup,
            train_repeat=args.train_repeat,
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
    markdown = os.path.splitext(args.out)[0] + '.md'
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def write() -> None:
        report['seconds'] = round(time.perf_counter() - start, 1)
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=1)
        with open(markdown, 'w') as f:
            f.write(gpu_markdown(report))

    for name in args.archs:
        try:
            report['archs'][name] = bench_arch(name, args, views, device,
                                               start, report)
        except KeyboardInterrupt:  # gpu_benchmark.sh's time limit
            report['interrupted'] = f'stopped during {name}'
            write()
            raise SystemExit(f'stopped during {name}; wrote {args.out} '
                             'with the architectures done before')
        if device.type == 'cuda':  # the models are gone: free memory
            torch.cuda.empty_cache()
        write()  # after every architecture: a partial run still counts
    print_summary(report)
    print(f'\nwrote {args.out} and {markdown} in {report["seconds"]:.0f} s')


if __name__ == '__main__':
    sys.exit(main())
