"""Forward latency of an APT backbone against its plain backbone.

    python tools/analysis/benchmark_backbone.py data/photos --arch small \
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
clock, or ``--clock cpu`` for process CPU time), APT's own
overhead (tokenizer, embedding, attention plans + RoPE tables, unpacking),
and peak memory of one forward of each (CUDA: ``max_memory_allocated``; CPU:
resident-set rise sampled every 0.5 ms in a fresh child process). With
``--json`` the last line is one JSON object with ``baseline_ms``, ``apt_ms``
(sums over the images of the per-image medians), ``speedup`` (their ratio)
and ``token_ratio`` (plain tokens / APT tokens, summed over the images).

Needs torch, mmengine and mmapt only (no mmcv / mmdet).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from mmapt.models import APTEVA02, EVA02, APTViT, ViT
from mmapt.models.backbones import count_tokens
from mmapt.tokenizer.prepare import list_images, load_rgb, normalise, to_canvas
from mmapt.utils.memory import peak_memory_mib


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'image_dir',
        nargs='?',
        default=None,
        help='folder of JPEG/PNG images (generated if none)')
    parser.add_argument(
        '--backbone',
        choices=sorted(BACKBONES),
        default='eva02',
        help='eva02: EVA02 vs APTEVA02; vit: the DINOv2-style '
        'ViT vs APTViT')
    parser.add_argument('--arch', default='small')
    parser.add_argument(
        '--canvas',
        type=int,
        default=None,
        help='eva02: 1536, vit: 1568 (= 14 x 112)')
    parser.add_argument(
        '--patch-sizes',
        type=int,
        nargs='+',
        default=None,
        help='eva02: 16 32 64 128, vit: 14 28 56 112')
    parser.add_argument(
        '--thresholds', type=float, nargs='+', default=[2.0, 2.0, 0.3])
    parser.add_argument(
        '--window-size',
        type=int,
        default=None,
        help='eva02: 32, vit: 16 (cells)')
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
    parser.add_argument(
        '--num-images', type=int, default=None, help='use the first N images')
    parser.add_argument('--num-generated', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument(
        '--clock',
        choices=('wall', 'cpu'),
        default='wall',
        help='wall: elapsed time (default); cpu: CPU time '
        'of this process, all threads summed (steadier on a '
        'machine shared with other jobs)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument(
        '--per-block',
        metavar='IMAGE',
        help='also time every block of both models on this '
        'image (file name without extension)')
    parser.add_argument(
        '--no-memory',
        action='store_true',
        help='skip the peak-memory measurement')
    parser.add_argument('--json', action='store_true')
    parser.add_argument(
        '--measure-memory', choices=['plain', 'apt'],
        help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args(argv)
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
    return args


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


def build_models(args) -> Tuple[EVA02, EVA02]:
    torch.manual_seed(0)
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
    plain = plain_cls(**cfg)
    apt = apt_cls(thresholds=tuple(args.thresholds), **cfg)
    missing = apt.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith('apt_embed.') for k in missing.missing_keys)
    # A trained-looking zero linear (values do not change the cost).
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    device = torch.device(args.device)
    return plain.to(device).eval(), apt.to(device).eval()


def generated_images(num: int, canvas: int) -> Dict[str, np.ndarray]:
    """Photo-like stand-ins: smooth shading, textured objects, flat areas."""
    rng = np.random.default_rng(0)
    images = {}
    for i in range(num):
        height = int(rng.integers(400, 640))
        width = int(rng.integers(480, 640))
        coarse = rng.uniform(0, 255, (4, 5, 3))
        rows = np.linspace(0, 3, height)[:, None]
        cols = np.linspace(0, 4, width)[None, :]
        r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
        r1, c1 = np.minimum(r0 + 1, 3), np.minimum(c0 + 1, 4)
        fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
        image = (
            coarse[r0, c0] * (1 - fr) * (1 - fc) + coarse[r1, c0] * fr *
            (1 - fc) + coarse[r0, c1] * (1 - fr) * fc +
            coarse[r1, c1] * fr * fc)
        for _ in range(4):  # textured objects
            h, w = int(rng.integers(60, 220)), int(rng.integers(60, 220))
            top = int(rng.integers(0, height - h))
            left = int(rng.integers(0, width - w))
            image[top:top + h, left:left + w] += rng.normal(0, 40, (h, w, 3))
        image[:height // 5] = rng.uniform(0, 255, 3)  # a flat sky band
        images[f'generated_{i}'] = to_canvas(
            np.clip(image, 0, 255).astype(np.uint8), canvas)
    return images


def load_images(args) -> Dict[str, np.ndarray]:
    if args.image_dir is None:
        return generated_images(args.num_generated, args.canvas)
    paths = list_images(args.image_dir)[:args.num_images]
    return {
        os.path.splitext(os.path.basename(p))[0]:
        to_canvas(load_rgb(p), args.canvas)
        for p in paths
    }


CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def timed(fn: Callable, device: torch.device,
          clock: Callable[[], float]) -> Tuple[float, object]:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = clock()
    result = fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (clock() - start) * 1e3, result


def apt_overhead(apt: EVA02, x: torch.Tensor, device: torch.device,
                 clock: Callable[[], float]) -> Dict[str, float]:
    """Time of APT's own stages (the blocks are timed by the full forward)."""
    tok_ms, layout = timed(lambda: apt.tokenize(x), device, clock)
    emb_ms, tokens = timed(lambda: apt.embed(x, layout), device, clock)
    plain_emb_ms, _ = timed(
        lambda: apt.patch_embed(x) + apt.position_map(layout.grid_size).
        permute(0, 2, 3, 1), device, clock)

    def context():
        ctx = apt.packed_context(layout)
        for plan in (ctx.window.plan, ctx.image.plan):  # force host planning
            if not plan._built:
                plan._build()
        return ctx

    ctx_ms, _ = timed(context, device, clock)
    unpack_ms, _ = timed(
        lambda: [layout.unpack(tokens).contiguous() for _ in apt.out_indices],
        device, clock)
    return dict(
        tokenizer_ms=tok_ms,
        embed_ms=emb_ms,
        plain_embed_ms=plain_emb_ms,
        context_ms=ctx_ms,
        unpack_ms=unpack_ms)


def per_block_times(plain: EVA02, apt: EVA02, x: torch.Tensor,
                    device: torch.device, clock: Callable[[], float],
                    repeat: int) -> List[Tuple[str, float, float]]:
    """Median time of every block of each model (blocks wrapped, not
    modified: the wrappers are removed afterwards)."""
    times = {('plain', i): [] for i in range(len(plain.blocks))}
    times.update({('apt', i): [] for i in range(len(apt.blocks))})

    def wrap(block, method: str, key) -> None:
        inner = getattr(block, method)

        def timed_call(*args, **kwargs):
            ms, out = timed(lambda: inner(*args, **kwargs), device, clock)
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
    """Run this script in a fresh process to measure one model's memory."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__), *argv, '--measure-memory', which
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    with torch.no_grad():
        run(argv)


def run(argv: List[str]) -> None:
    args = parse_args(argv)
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plain, apt = build_models(args)
    images = load_images(args)
    batches = {
        name: normalise([img]).to(device)
        for name, img in images.items()
    }

    if args.measure_memory:  # child: first image, one model, fresh process
        x = next(iter(batches.values()))
        model = plain if args.measure_memory == 'plain' else apt
        print(f'{peak_memory_mib(lambda: model(x), device):.1f}')
        return

    # Warm-up (allocator, thread pool, kernels) on the first image, then
    # APT's own stages (cheap, and any error shows before the long loop).
    first = next(iter(batches.values()))
    plain(first)
    apt(first)
    overhead = {
        name: apt_overhead(apt, x, device, clock)
        for name, x in batches.items()
    }

    times: Dict[str, Dict[str, List[float]]] = {
        name: dict(plain=[], apt=[])
        for name in batches
    }
    stats = {}
    for name, x in batches.items():
        with torch.no_grad(), count_tokens(apt) as counter:
            apt(x)
        stats[name] = counter.per_image()
    for rep in range(args.repeat):
        for name, x in batches.items():
            order = ('plain', 'apt') if rep % 2 == 0 else ('apt', 'plain')
            for which in order:
                model = plain if which == 'plain' else apt
                ms, _ = timed(lambda: model(x), device, clock)
                times[name][which].append(ms)

    rows = []
    for name in batches:
        base_ms = statistics.median(times[name]['plain'])
        apt_ms = statistics.median(times[name]['apt'])
        rows.append(
            dict(
                image=name,
                tokens=int(stats[name]['tokens'][0]),
                baseline_tokens=int(stats[name]['baseline_tokens'][0]),
                keep_ratio=float(stats[name]['keep_ratio'][0]),
                baseline_ms=base_ms,
                apt_ms=apt_ms,
                speedup=base_ms / apt_ms,
                **overhead[name]))

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
            plain_peak_mib=child_memory(argv, 'plain'),
            apt_peak_mib=child_memory(argv, 'apt'))

    total_base = sum(r['baseline_ms'] for r in rows)
    total_apt = sum(r['apt_ms'] for r in rows)
    total_tokens = sum(r['tokens'] for r in rows)
    total_baseline_tokens = sum(r['baseline_tokens'] for r in rows)
    summary = dict(
        baseline_ms=round(total_base, 3),
        apt_ms=round(total_apt, 3),
        speedup=round(total_base / total_apt, 4),
        token_ratio=round(total_baseline_tokens / total_tokens, 4),
        keep_ratio=round(total_tokens / total_baseline_tokens, 4),
        overhead_ms={
            key: round(sum(r[key] for r in rows), 1)
            for key in ('tokenizer_ms', 'embed_ms', 'plain_embed_ms',
                        'context_ms', 'unpack_ms')
        },
        **memory,
        images=len(rows),
        backbone=args.backbone,
        arch=args.arch,
        canvas=args.canvas,
        thresholds=args.thresholds,
        window_size=args.window_size,
        repeat=args.repeat,
        clock=args.clock,
        threads=torch.get_num_threads(),
        device=str(device))

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
          f'{summary["speedup"] / summary["token_ratio"]:.3f})')
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


if __name__ == '__main__':
    main()
