"""Forward latency of an APT backbone against its plain backbone
(``benchmark.py --backbone-only``; ``benchmark_backbone.py`` is its alias).

    python tools/analysis/benchmark.py --backbone-only data/photos \
        --arch small \
        --canvas 1536 --patch-sizes 16 32 64 128 --thresholds 2 2 0.3 \
        --window-size 32 --global-attn-indexes 1 3 5 7 9 11 --repeat 2 --json

``--backbone eva02`` (default) compares APTEVA02 with EVA02; ``--backbone
vit`` compares APTViT with the DINOv2-style ViT (class + ``--registers``
register tokens), with the family's own defaults: canvas 1568, patch sizes
14 / 28 / 56 / 112, windows of 16 cells.

One process; both models hold the same (random) weights; for every image and
repeat the two forwards run back to back, alternating which goes first, so a
busy machine slows both alike. Images are prepared like the detection test
pipeline (long side to ``--canvas``, padded with 114 to a square), or
generated when no folder is given. Reported: tokens and keep ratio per image,
median forward latency of each model (batch 1, ``torch.no_grad``; wall
clock, or ``--clock cpu`` for process CPU time), APT's own stages
(tokenizer, embedding, attention plans + RoPE tables, unpacking: the stage
marks of one real forward per image, ``overhead_ms``) and the tokenizer's
share of the forward (``tokenizer_share``), and peak memory of one forward
of each (CUDA: ``max_memory_allocated``; CPU:
resident-set rise sampled every 0.5 ms in a fresh child process). With
``--json`` the last line is one JSON object with ``baseline_ms``, ``apt_ms``
(sums over the images of the per-image medians), ``speedup`` (their ratio)
and ``token_ratio`` (plain tokens / APT tokens, summed over the images).

``--bucket M``: also time APT in its static-shape mode (``apt_static``, a
third interleaved arm): each image's packed length (prefix tokens included)
rounded up to a multiple of M, at most the square canvas's; reported per
image and summed (``static_ms``, ``static_speedup`` = plain / static,
``static_vs_exact`` = static time / exact APT time), with the static
attention kernel that ran (``static_kernels``: calls per kernel name of
``count_attention_calls``).

``--accelerate compile`` (or ``cuda_graphs``): two more interleaved arms,
``plain_compile`` and ``apt_compile``: both backbones with
``accelerate=MODE`` (APT: its default token buckets, one compiled graph per
bucket used); every image runs once per arm first, untimed, and the time of
those first calls (compile + one forward) is reported apart
(``accelerated``: totals, compiled plain / compiled APT, each against its
eager arm, ``build_s``, ``keys``).

``--count-overhead``: no timing; per image, the aten ops dispatched and
the host synchronisations of one forward of each model, per stage
(tokenizer, embedding, context, blocks, unpack; ``other`` outside the
marks), with the source line of every sync (``mmapt.benchmark.overhead``; on
CPU the syncs are the reads of tensor values and data-dependent ops that
would wait on a GPU, on CUDA what the sync debug mode reports). With
``--bucket M`` APT is counted in its static-shape mode too (packed length
rounded up to a multiple of M). ``--json``: the last line is one JSON
object ``{"overhead": {image: {"plain": ..., "apt": ...}}, ...}``.

Needs torch, mmengine and mmapt only (no mmcv / mmdet).
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mmapt.apis.images import list_images, load_rgb
from mmapt.apis.tool_args import (add_json_argument, add_num_images_argument,
                                  add_thresholds_argument)
from mmapt.apis.views import normalise, to_canvas
from mmapt.benchmark.memory import peak_memory_mib
from mmapt.benchmark.timing import time_call
from mmapt.engine.precision import add_device_argument
from mmapt.models import APTEVA02, EVA02, APTViT, ViT
from mmapt.models.backbones.accelerate import ACCELERATE_MODES
from .backbones import (accelerated_arm, bucket_size, build_backbone_pair,
                        count_forward_overhead, forward_tokens,
                        generated_photos, image_name, packed_to, packed_tokens,
                        static_arm)
from .core import (Arm, add_clock_argument, add_threads_argument, get_clock,
                   interleaved, ratio, set_threads, settings_of)
from .runner import split_of

#: What the memory child runs (its command line follows).
CHILD = ('import sys; from mmapt.benchmark.backbone_bench import main; '
         'main(sys.argv[1:])')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The backbone mode's command line (``benchmark.py --backbone-only``)."""
    parser.add_argument(
        'image_dir',
        nargs='?',
        default=None,
        help='folder of JPEG/PNG images (generated if none)')
    parser.add_argument(
        '--backbone',
        choices=sorted(BACKBONES),
        default='eva02',
        help=family_classes())
    parser.add_argument('--arch', default='small')
    # Settings whose default depends on --backbone (BACKBONES' defaults).
    for key, what, kind in (('canvas', 'square canvas side in pixels', {}),
                            ('patch_sizes', 'patch sides in pixels',
                             dict(nargs='+')), ('window_size',
                                                'window side in cells', {})):
        parser.add_argument(
            '--' + key.replace('_', '-'),
            type=int,
            default=None,
            help=f'{what} (default: {family_defaults(key)})',
            **kind)
    add_thresholds_argument(parser)
    parser.add_argument(
        '--registers',
        type=int,
        default=4,
        help='vit: register tokens (after the class token)')
    parser.add_argument(
        '--global-attn-indexes',
        type=int,
        nargs='*',
        default=[1, 3, 5, 7, 9, 11])
    parser.add_argument('--out-indices', type=int, nargs='+', default=[-1])
    parser.add_argument('--repeat', type=int, default=2)
    add_num_images_argument(parser)
    parser.add_argument('--num-generated', type=int, default=3)
    add_threads_argument(parser)
    add_clock_argument(parser)
    add_device_argument(parser)
    parser.add_argument(
        '--per-block',
        metavar='IMAGE',
        help='also time every block of both models on this '
        'image (file name without extension)')
    parser.add_argument(
        '--no-memory',
        action='store_true',
        help='skip the peak-memory measurement')
    parser.add_argument(
        '--count-overhead',
        action='store_true',
        help='count aten ops and host syncs per stage of one forward of '
        'each model per image instead of timing')
    parser.add_argument(
        '--bucket',
        type=int,
        default=None,
        help='also time (or with --count-overhead, count) APT in its '
        'static-shape mode, its packed length rounded up to a multiple of '
        'this')
    parser.add_argument(
        '--accelerate',
        choices=list(ACCELERATE_MODES),
        default=None,
        help='also time both backbones with accelerate=MODE (compiled / '
        'CUDA graphs; APT per token bucket), interleaved with the eager '
        'arms; the first call of every shape key is timed apart')
    add_json_argument(parser)
    parser.add_argument(
        '--measure-memory', choices=['plain', 'apt'],
        help=argparse.SUPPRESS)  # child-process mode


def check_args(parser: argparse.ArgumentParser,
               args: argparse.Namespace) -> None:
    """Fill in the family's defaults; refuse what cannot run."""
    if args.bucket is not None and args.per_block:
        parser.error('--bucket does not go with --per-block')
    for key, value in BACKBONES[args.backbone]['defaults'].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    base = args.patch_sizes[0]
    expected = [base * 2**i for i in range(len(args.patch_sizes))]
    if args.patch_sizes != expected:
        parser.error(f'--patch-sizes must be p * 2**i, e.g. {expected}')
    if len(args.thresholds) != len(args.patch_sizes) - 1:
        parser.error(f'{len(args.patch_sizes)} patch sizes need '
                     f'{len(args.patch_sizes) - 1} thresholds')


def family_classes() -> str:
    """The families and the models they compare, for the help:
    ``'eva02: EVA02 vs APTEVA02; vit: ViT vs APTViT'``."""
    pairs = ((name, *spec['classes']) for name, spec in BACKBONES.items())
    return '; '.join(f'{name}: {plain.__name__} vs {apt.__name__}'
                     for name, plain, apt in pairs)


def family_defaults(key: str) -> str:
    """Each family's default of ``key``, for the help: ``'eva02: 1536,
    vit: 1568'``."""
    shown = []
    for name, spec in BACKBONES.items():
        value = spec['defaults'][key]
        if isinstance(value, list):
            value = ' '.join(map(str, value))
        shown.append(f'{name}: {value}')
    return ', '.join(shown)


# Plain and APT class of each family, and its argument defaults.
BACKBONES = {
    'eva02':
    dict(
        classes=(EVA02, APTEVA02),
        defaults=dict(
            canvas=1536, patch_sizes=[16, 32, 64, 128], window_size=32)),
    'vit':
    dict(
        classes=(ViT, APTViT),
        defaults=dict(
            canvas=1568, patch_sizes=[14, 28, 56, 112], window_size=16)),
}


def build_models(args) -> Tuple[nn.Module, nn.Module]:
    cfg = dict(
        arch=args.arch,
        img_size=args.canvas,
        patch_size=args.patch_sizes[0],
        window_size=args.window_size,
        global_attn_indexes=tuple(args.global_attn_indexes),
        out_indices=tuple(args.out_indices))
    if args.backbone == 'vit':
        cfg.update(num_register_tokens=args.registers, layer_scale=True)
    plain_cls, apt_cls = BACKBONES[args.backbone]['classes']
    return build_backbone_pair(plain_cls, apt_cls, cfg, tuple(args.thresholds),
                               torch.device(args.device))


def load_images(args) -> Dict[str, np.ndarray]:
    if args.image_dir is None:
        return generated_photos(args.num_generated, args.canvas)
    paths = list_images(args.image_dir)[:args.num_images]
    return {image_name(p): to_canvas(load_rgb(p), args.canvas) for p in paths}


def stage_times(plain: nn.Module, apt: nn.Module, x: torch.Tensor,
                device: torch.device,
                clock: Callable[[], float]) -> Dict[str, float]:
    """APT's own stages inside one real forward of each model (the marks of
    mmapt.models.stages; the blocks are timed by the interleaved runs)."""
    _, apt_stages = split_of(lambda: apt(x), device, clock, apt)
    _, plain_stages = split_of(lambda: plain(x), device, clock, plain)
    return dict(
        tokenizer_ms=apt_stages.get('tokenizer', 0.),
        embed_ms=apt_stages.get('embedding', 0.),
        plain_embed_ms=plain_stages.get('embedding', 0.),
        context_ms=apt_stages.get('context', 0.),
        unpack_ms=apt_stages.get('unpack', 0.),
        blocks_ms=apt_stages.get('blocks', 0.),
        forward_ms=sum(apt_stages.values()))


def per_block_times(plain: nn.Module, apt: nn.Module, x: torch.Tensor,
                    device: torch.device, clock: Callable[[], float],
                    repeat: int) -> List[Tuple[str, float, float]]:
    """Median time of every block of each model (blocks wrapped, not
    modified: the wrappers are removed afterwards)."""
    times = {('plain', i): [] for i in range(len(plain.blocks))}
    times.update({('apt', i): [] for i in range(len(apt.blocks))})

    def wrap(block, method: str, key) -> None:
        inner = getattr(block, method)

        def timed_call(*args, **kwargs):
            ms, out = time_call(lambda: inner(*args, **kwargs), device, clock)
            times[key].append(ms)
            return out

        setattr(block, method, timed_call)

    for i, block in enumerate(plain.blocks):
        wrap(block, 'forward', ('plain', i))
    for i, block in enumerate(apt.blocks):
        wrap(block, 'forward_packed', ('apt', i))
    try:
        for _ in range(repeat):
            plain(x)
            apt(x)
    finally:
        for block in (*plain.blocks, *apt.blocks):
            block.__dict__.pop('forward', None)
            block.__dict__.pop('forward_packed', None)
    return [('window' if block.window_size else 'global',
             statistics.median(times[('plain', i)]),
             statistics.median(times[('apt', i)]))
            for i, block in enumerate(plain.blocks)]


def child_memory(argv: Sequence[str], which: str) -> float:
    """One model's peak memory, measured in a fresh process (this mode
    again, ``--measure-memory``) that imports this same mmapt."""
    root = os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, env.get('PYTHONPATH')) if p)
    cmd = [sys.executable, '-c', CHILD, *argv, '--measure-memory', which]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: List[str]) -> None:
    """The backbone mode on its command line ``argv`` (the memory child's
    entry; ``benchmark.py --backbone-only`` parses and calls :func:`run`)."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    args.argv = argv
    run(args)


def run(args: argparse.Namespace) -> None:
    """Time (or count) the backbone pair of ``args``, without gradients;
    ``args.argv`` goes to the memory measurement's child processes."""
    with torch.no_grad():
        _run(args)


def _run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    clock = get_clock(args.clock, device)
    set_threads(args.threads)
    plain, apt = build_models(args)
    batches = {
        name: normalise([img]).to(device)
        for name, img in load_images(args).items()
    }

    if args.measure_memory:  # child: first image, one model, fresh process
        x = next(iter(batches.values()))
        model = plain if args.measure_memory == 'plain' else apt
        print(f'{peak_memory_mib(lambda: model(x), device):.1f}')
        return
    if args.count_overhead:
        return report_overhead(args, plain, apt, batches)

    # Warm-up (allocator, thread pool, kernels) on the first image, then
    # APT's own stages (cheap, and any error shows before the long loop).
    first = next(iter(batches.values()))
    plain(first)
    apt(first)
    overhead = {
        name: stage_times(plain, apt, x, device, clock)
        for name, x in batches.items()
    }
    records = dict(plain=Arm('plain'), apt=Arm('apt'))
    for name, x in batches.items():
        records['apt'].set_tokens(name, *forward_tokens(apt, lambda: apt(x)))
    # Every arm runs one image given its name.
    arms = dict(
        plain=lambda name: plain(batches[name]),
        apt=lambda name: apt(batches[name]))
    static = None
    if args.bucket:
        static = static_arm(apt, batches, records['apt'].tokens, args.bucket)
        arms['apt_static'] = static['run']
        records['apt_static'] = Arm('apt_static')
    built = {}
    if args.accelerate:  # compiled / captured before the timed runs
        for which, model in (('plain', plain), ('apt', apt)):
            arm = f'{which}_{args.accelerate}'
            print(f'{arm}: compiling / capturing ...', file=sys.stderr)
            built[which] = accelerated_arm(model, args.accelerate, batches)
            arms[arm] = built[which]['run']
            records[arm] = Arm(arm)
    for _, name, which in interleaved(list(arms), list(batches), args.repeat):
        ms, _ = time_call(lambda: arms[which](name), device, clock)
        records[which].add(name, model_ms=ms)

    rows = []
    for name in batches:
        base_ms = statistics.median(records['plain'].times(name))
        apt_ms = statistics.median(records['apt'].times(name))
        tokens, baseline_tokens = records['apt'].tokens[name]
        row = dict(
            image=name,
            tokens=tokens,
            baseline_tokens=baseline_tokens,
            keep_ratio=tokens / baseline_tokens,
            baseline_ms=base_ms,
            apt_ms=apt_ms,
            speedup=base_ms / apt_ms,
            **overhead[name])
        if static:
            static_ms = statistics.median(records['apt_static'].times(name))
            row.update(
                pack_size=static['pack_sizes'][name],
                static_ms=static_ms,
                static_vs_exact=static_ms / apt_ms)
        rows.append(row)

    blocks = []
    if args.per_block:
        if args.per_block not in batches:
            raise SystemExit(f'--per-block {args.per_block}: no such image '
                             f'(have {sorted(batches)})')
        blocks = per_block_times(plain, apt, batches[args.per_block], device,
                                 clock, args.repeat)

    memory = {}
    if not args.no_memory:
        memory = dict(
            plain_peak_mib=child_memory(args.argv, 'plain'),
            apt_peak_mib=child_memory(args.argv, 'apt'))

    total_base = records['plain'].total()
    total_apt = records['apt'].total()
    stage_ms = {
        key: sum(r[key] for r in rows)
        for key in ('tokenizer_ms', 'embed_ms', 'plain_embed_ms', 'context_ms',
                    'unpack_ms', 'blocks_ms', 'forward_ms')
    }
    summary = dict(
        baseline_ms=round(total_base, 3),
        apt_ms=round(total_apt, 3),
        speedup=ratio(total_base, total_apt),
        token_ratio=ratio(records['apt'].total_baseline_tokens(),
                          records['apt'].total_tokens()),
        keep_ratio=ratio(records['apt'].total_tokens(),
                         records['apt'].total_baseline_tokens()),
        overhead_ms={
            key: round(stage_ms[key], 1)
            for key in ('tokenizer_ms', 'embed_ms', 'plain_embed_ms',
                        'context_ms', 'unpack_ms')
        },
        # Shares of APT's forward, from the stage marks of one forward.
        tokenizer_share=ratio(stage_ms['tokenizer_ms'],
                              stage_ms['forward_ms']),
        outside_blocks_share=ratio(
            stage_ms['forward_ms'] - stage_ms['blocks_ms'],
            stage_ms['forward_ms']),
        **memory,
        **settings(args, device, len(rows)))
    if static:
        total_static = records['apt_static'].total()
        summary.update(
            bucket=args.bucket,
            static_ms=round(total_static, 3),
            static_speedup=ratio(total_base, total_static),
            static_vs_exact=ratio(total_static, total_apt),
            static_kernels=static['kernels'],
            per_image_static={
                r['image']:
                dict(
                    pack_size=r['pack_size'],
                    static_ms=round(r['static_ms'], 1),
                    static_vs_exact=round(r['static_vs_exact'], 4))
                for r in rows
            })

    print(f'{"image":<22}{"tokens":>8}{"base":>7}{"keep":>7}'
          f'{"plain ms":>10}{"APT ms":>10}{"speed-up":>9}'
          f'{"tok ms":>8}{"emb ms":>8}{"ctx ms":>8}{"unp ms":>8}')
    for r in rows:
        print(f'{r["image"]:<22}{r["tokens"]:>8}{r["baseline_tokens"]:>7}'
              f'{r["keep_ratio"]:>7.3f}{r["baseline_ms"]:>10.0f}'
              f'{r["apt_ms"]:>10.0f}{r["speedup"]:>9.3f}'
              f'{r["tokenizer_ms"]:>8.0f}{r["embed_ms"]:>8.0f}'
              f'{r["context_ms"]:>8.0f}{r["unpack_ms"]:>8.0f}')
    print(f'total: plain {total_base:.0f} ms, APT {total_apt:.0f} ms, '
          f'speed-up {summary["speedup"]:.3f}, token ratio '
          f'{summary["token_ratio"]:.3f} (speed-up / token ratio '
          f'{summary["speedup"] / summary["token_ratio"]:.3f}); tokenizer '
          f'{summary["tokenizer_share"]:.1%} of the APT forward, outside '
          f'the blocks {summary["outside_blocks_share"]:.1%}')
    if static:
        print(f'static mode (--bucket {args.bucket}, kernels '
              f'{static["kernels"]}):')
        for r in rows:
            print(f'  {r["image"]:<20} pack_size {r["pack_size"]:>6}  '
                  f'static {r["static_ms"]:>8.0f} ms  static / exact APT '
                  f'{r["static_vs_exact"]:.3f}')
        print(f'  total: static {summary["static_ms"]:.0f} ms, speed-up '
              f'over plain {summary["static_speedup"]:.3f}, static / exact '
              f'APT {summary["static_vs_exact"]:.3f}')
    if built:
        summary['accelerated'] = accelerated_summary(args.accelerate, records,
                                                     built)
        print_accelerated(summary['accelerated'])
    if blocks:
        print(f'per block on {args.per_block} (median ms): '
              f'{"block":>6}{"type":>8}{"plain":>10}{"APT":>10}{"ratio":>8}')
        for i, (kind, base_ms, apt_ms) in enumerate(blocks):
            print(f'{"":>32}{i:>6}{kind:>8}{base_ms:>10.0f}{apt_ms:>10.0f}'
                  f'{base_ms / apt_ms:>8.3f}')
        summary['per_block'] = [
            dict(block=i, type=kind, plain_ms=round(b, 1), apt_ms=round(a, 1))
            for i, (kind, b, a) in enumerate(blocks)
        ]
    if memory:
        print(f'peak memory of one forward: plain '
              f'{memory["plain_peak_mib"]:.0f} MiB, APT '
              f'{memory["apt_peak_mib"]:.0f} MiB')
    if args.json:
        print(json.dumps(summary))


def accelerated_summary(mode: str, records: Dict[str, Arm],
                        built: Dict[str, dict]) -> dict:
    """Eager and accelerated totals of both backbones, their ratios and
    the time of the first calls (compiling / capturing)."""
    totals = {
        arm: records[arm].total()
        for arm in ('plain', 'apt', f'plain_{mode}', f'apt_{mode}')
    }
    plain_acc, apt_acc = totals[f'plain_{mode}'], totals[f'apt_{mode}']
    return dict(
        mode=mode,
        plain_ms=round(plain_acc, 3),
        apt_ms=round(apt_acc, 3),
        speedup=ratio(plain_acc, apt_acc),
        plain_vs_eager=ratio(totals['plain'], plain_acc),
        apt_vs_eager=ratio(totals['apt'], apt_acc),
        build_s={
            k: v['build_s']
            for k, v in built.items()
        },
        keys={
            k: v['keys']
            for k, v in built.items()
        })


def print_accelerated(acc: dict) -> None:
    mode = acc['mode']
    print(f'accelerate={mode}: plain {acc["plain_ms"]:.0f} ms, APT '
          f'{acc["apt_ms"]:.0f} ms, speed-up {acc["speedup"]:.3f}; '
          f'{mode} vs eager: plain {acc["plain_vs_eager"]:.3f}x, APT '
          f'{acc["apt_vs_eager"]:.3f}x; first calls (compile / capture + '
          f'one forward): plain {acc["build_s"]["plain"]:.0f} s over '
          f'{acc["keys"]["plain"]} shape(s), APT {acc["build_s"]["apt"]:.0f}'
          f' s over {acc["keys"]["apt"]} key(s)')


def settings(args, device: torch.device, images: int) -> dict:
    return dict(
        images=images,
        **settings_of(args, 'backbone', 'arch', 'canvas', 'thresholds',
                      'window_size', 'repeat', 'clock'),
        threads=torch.get_num_threads(),
        device=str(device))


def report_overhead(args, plain: nn.Module, apt: nn.Module,
                    batches: Dict[str, torch.Tensor]) -> None:
    """--count-overhead: aten ops and host syncs of one forward per image,
    per stage, plain vs APT (vs APT in static mode with --bucket)."""
    models = dict(plain=plain, apt=apt)
    per_image = {}
    for name, x in batches.items():
        counts = {k: count_forward_overhead(m, x) for k, m in models.items()}
        if args.bucket:
            tokens, baseline = forward_tokens(apt, lambda: apt(x))
            pack = bucket_size(
                packed_tokens(apt, tokens), args.bucket,
                packed_tokens(apt, baseline))
            with packed_to(apt, pack):
                counts['apt_static'] = count_forward_overhead(apt, x)
            counts['apt_static']['pack_size'] = pack
        per_image[name] = counts
    stages = ('tokenizer', 'embedding', 'context', 'blocks', 'unpack', 'other')
    print(f'{"image":<22}{"model":<12}{"ops":>7}{"outside":>9}{"syncs":>7}' +
          ''.join(f'{s[:9]:>10}' for s in stages))
    for name, counts in per_image.items():
        for which, c in counts.items():
            cells = ''.join(
                f'{c["ops"].get(s, 0):>5}/{c["syncs"].get(s, 0):<4}'
                for s in stages)
            print(f'{name:<22}{which:<12}{c["total_ops"]:>7}'
                  f'{c["outside_blocks"]:>9}{c["total_syncs"]:>7}{cells}')
    print('(per stage: aten ops / host syncs; syncs on CPU are the reads of '
          'device values and data-dependent ops a GPU would wait for)')
    for name, counts in per_image.items():
        for which, c in counts.items():
            for site, n in collections.Counter(c['sync_sites']).items():
                print(f'  {name} {which}: {n} x {site}')
    if args.json:
        device = next(plain.parameters()).device
        print(
            json.dumps(
                dict(
                    overhead=per_image,
                    **settings(args, device, len(per_image)))))
