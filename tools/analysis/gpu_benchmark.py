"""One-command GPU benchmark of the EVA-02 backbones: APT against plain.

    python tools/analysis/gpu_benchmark.py --out gpu_benchmark.json
    python tools/analysis/gpu_benchmark.py --images DIR --out FILE
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
batch 1, and are timed on these arms:

* ``plain_square``: the plain model on the square canvas (the configs'
  test view);
* ``plain_window``: the plain model on the content padded only to the next
  window multiple (the fair baseline for a non-square photograph);
* ``apt_square``: APT (thresholds 2, 2, 0.3) on the square canvas, with
  torch's CUDA varlen attention when available;
* ``apt_nopad``: APT padding-free: the content padded only to the largest
  patch (128 px), windows partial at the border;
* ``apt_square_padded``: the same with the padded SDPA fallback (CUDA with a
  varlen kernel only; its outputs are first compared with ``apt_square``'s).

Repeats are interleaved (every repeat runs every image through every arm,
rotating which arm goes first) so a drifting clock or a busy machine hits
all arms alike. GPU times are CUDA events around each forward, with a
synchronize before reading them; CPU times are wall clock. Reported per arm:
median latency per image, images/s (images / sum of the medians), tokens and
keep ratio, peak memory of one forward (CUDA: ``max_memory_allocated``
above the weights; CPU: resident-set rise, rough). The JSON file holds
everything, with the torch version, GPU name and the attention path that
actually ran.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from mmapt.models import APTEVA02, EVA02
from mmapt.models.backbones import count_tokens
from mmapt.models.layers import attention
from mmapt.tokenizer.prepare import (canvas_content_size, list_images,
                                     load_rgb, normalise, sample_photo_paths,
                                     to_canvas)
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
ARMS = ('plain_square', 'plain_window', 'apt_square', 'apt_nopad',
        'apt_square_padded')
LARGEST_PATCH = 128


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--images',
        help='folder of images (.jpg/.png/.npy); '
        'default: the scikit-image sample photographs')
    parser.add_argument('--out', required=True, help='JSON file to write')
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
    parser.add_argument('--canvas', type=int, default=1536)
    parser.add_argument(
        '--thresholds', type=float, nargs='+', default=[2.0, 2.0, 0.3])
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
        '--num-images', type=int, default=None, help='use the first N images')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny 4-block model on a 256 canvas, 2 repeats '
        '(a smoke test of the script, e.g. on CPU)')
    args = parser.parse_args(argv)
    if args.quick:
        args.archs = ['quick']
        args.canvas = 256
        args.repeat = min(args.repeat, 2)
        args.warmup = min(args.warmup, 1)
    if args.repeat < 1:
        parser.error('--repeat must be >= 1')
    if len(args.thresholds) != 3:
        parser.error('--thresholds takes 3 values (patch sizes 16/32/64/128)')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU visible to torch '
                     f'{torch.__version__}; use --device cpu --quick for a '
                     'smoke test')
    return args


# ------------------------------------------------------------------ inputs
def crop_to_multiple(canvas: np.ndarray, height: int, width: int,
                     multiple: int) -> np.ndarray:
    """The top-left content of a canvas padded to ``multiple``."""
    return np.ascontiguousarray(
        canvas[:-(-height // multiple) * multiple, :-(-width // multiple) *
               multiple])


def load_views(args) -> List[dict]:
    """Per image: name, the square canvas, the window-padded and the
    padding-free (largest-patch-padded) views."""
    try:
        paths = list_images(args.images) if args.images else \
            sample_photo_paths()
    except FileNotFoundError as err:
        raise SystemExit(f'error: {err}')
    paths = paths[:args.num_images]
    window_px = ARCHS[args.archs[0]]['window_size'] * 16
    views = []
    for path in paths:
        image = load_rgb(path)
        square = to_canvas(image, args.canvas)
        height, width = canvas_content_size(*image.shape[:2], args.canvas)
        # Content padded only up to the next multiple (same pixels).
        views.append(
            dict(
                name=os.path.splitext(os.path.basename(path))[0],
                size=[int(image.shape[0]),
                      int(image.shape[1])],
                content=[height, width],
                square=normalise([square]),
                window=normalise(
                    [crop_to_multiple(square, height, width, window_px)]),
                nopad=normalise(
                    [crop_to_multiple(square, height, width, LARGEST_PATCH)])))
    return views


# ------------------------------------------------------------------ models
def build_models(name: str, args,
                 device: torch.device) -> Tuple[EVA02, APTEVA02]:
    """Plain and APT backbones with the same random weights."""
    torch.manual_seed(0)
    cfg = dict(
        img_size=args.canvas, patch_size=16, out_indices=(-1, ), **ARCHS[name])
    plain = EVA02(**cfg)
    apt = APTEVA02(thresholds=tuple(args.thresholds), **cfg)
    result = apt.load_state_dict(plain.state_dict(), strict=False)
    unexpected = [
        k for k in result.missing_keys if not k.startswith('apt_embed.')
    ]
    if unexpected or result.unexpected_keys:
        raise RuntimeError(f'weights differ: {unexpected} '
                           f'{result.unexpected_keys}')
    with torch.no_grad():  # a trained-looking (non-zero) ZeroLinear
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    return plain.to(device).eval(), apt.to(device).eval()


# ------------------------------------------------------------------ timing
def compare_outputs(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float(), b.float()
    diff = (a - b).abs()
    return dict(
        max_abs_diff=float(diff.max()),
        rel_l2_diff=float((a - b).norm() / b.norm().clamp_min(1e-12)),
        max_abs_value=float(b.abs().max()))


def bench_arch(name: str, args, views: List[dict],
               device: torch.device) -> dict:
    plain, apt = build_models(name, args, device)
    autocast = (
        torch.autocast(device.type, dtype=DTYPES[args.dtype])
        if args.dtype != 'fp32' else nullcontext())
    varlen = device.type == 'cuda' and attention.cuda_varlen_enabled() and \
        args.dtype != 'fp32'
    arms = [a for a in ARMS if varlen or a != 'apt_square_padded']
    inputs = {
        view['name']: {
            key: view[key].to(device)
            for key in ('square', 'window', 'nopad')
        }
        for view in views
    }
    view_of = dict(plain_window='window', apt_nopad='nopad')

    def call(arm: str, image: str) -> Callable[[], object]:
        model = apt if arm.startswith('apt') else plain
        x = inputs[image][view_of.get(arm, 'square')]
        padded = arm == 'apt_square_padded'

        def run():
            with autocast, (attention.padded_attention()
                            if padded else nullcontext()):
                return model(x)

        return run

    result: Dict[str, dict] = {arm: dict(per_image={}) for arm in arms}
    # Warm-up, token counts and the varlen/padded comparison (untimed).
    comparison = []
    for image in inputs:
        for arm in arms:
            for _ in range(args.warmup):
                call(arm, image)()
            with count_tokens(
                    apt if arm.startswith('apt') else plain) as counter:
                call(arm, image)()
            counts = counter.per_image()
            result[arm]['per_image'][image] = dict(
                tokens=int(counts['tokens'].sum()),
                baseline_tokens=int(counts['baseline_tokens'].sum()),
                times_ms=[])
        if varlen:
            out_varlen = call('apt_square', image)()[0]
            out_padded = call('apt_square_padded', image)()[0]
            comparison.append(
                dict(image=image, **compare_outputs(out_varlen, out_padded)))
    attention_path = 'cpu padded SDPA (no varlen kernel off CUDA)'
    if device.type == 'cuda':
        if attention.cuda_varlen_enabled() and args.dtype != 'fp32':
            attention_path = 'torch.nn.attention.varlen (flash varlen)'
        else:
            attention_path = ('padded SDPA fallback (torch varlen kernel '
                              'unavailable or failed, or fp32)')
            if 'apt_square_padded' in arms:  # varlen failed while running
                arms.remove('apt_square_padded')
                result.pop('apt_square_padded')
                comparison = []

    # Timed, interleaved: every repeat runs every image through every arm.
    for rep in range(args.repeat):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]
        for image in inputs:
            for arm in order:
                ms, _ = time_call(call(arm, image), device)
                result[arm]['per_image'][image]['times_ms'].append(ms)

    for arm in arms:
        per_image = result[arm]['per_image']
        for image, entry in per_image.items():
            entry['median_ms'] = statistics.median(entry['times_ms'])
            entry['times_ms'] = [round(t, 3) for t in entry['times_ms']]
        total_ms = sum(e['median_ms'] for e in per_image.values())
        tokens = sum(e['tokens'] for e in per_image.values())
        # Peak memory of one forward on the first image (weights excluded).
        first = next(iter(inputs))
        result[arm].update(
            total_ms=round(total_ms, 3),
            img_s=round(len(per_image) / total_ms * 1e3, 3),
            median_ms=round(
                statistics.median(e['median_ms'] for e in per_image.values()),
                3),
            tokens=tokens,
            square_tokens=sum(
                e['baseline_tokens']
                for e in result['plain_square']['per_image'].values()),
            peak_mib=round(peak_memory_mib(call(arm, first), device), 1))
        result[arm]['keep_ratio'] = round(
            tokens / result[arm]['square_tokens'], 4)

    def ratio(num: str, den: str) -> Optional[float]:
        if num not in result or den not in result:
            return None
        return round(result[num]['total_ms'] / result[den]['total_ms'], 4)

    summary = dict(
        speedup_vs_plain_square=ratio('plain_square', 'apt_square'),
        speedup_vs_plain_window=ratio('plain_window', 'apt_square'),
        nopad_speedup_vs_plain_window=ratio('plain_window', 'apt_nopad'),
        nopad_speedup_vs_plain_square=ratio('plain_square', 'apt_nopad'),
        token_ratio=round(
            result['plain_square']['tokens'] / result['apt_square']['tokens'],
            4),
        token_ratio_vs_plain_window=round(
            result['plain_window']['tokens'] / result['apt_square']['tokens'],
            4),
        nopad_token_ratio_vs_plain_window=round(
            result['plain_window']['tokens'] / result['apt_nopad']['tokens'],
            4),
        varlen_speedup_vs_padded=ratio('apt_square_padded', 'apt_square'))
    return dict(
        summary=summary,
        attention_path=attention_path,
        varlen_vs_padded=comparison,
        arms=result)


# ------------------------------------------------------------------ report
def environment(device: torch.device) -> dict:
    env = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        device=str(device),
        cpu_threads=torch.get_num_threads(),
        varlen_kernel_importable=attention._torch_varlen_attn is not None)
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda)
    try:
        env['git_commit'] = subprocess.run(['git', 'rev-parse', 'HEAD'],
                                           capture_output=True,
                                           text=True,
                                           cwd=os.path.dirname(
                                               os.path.abspath(__file__)),
                                           timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env['git_commit'] = None
    return env


def print_summary(report: dict) -> None:
    env = report['environment']
    print(f'torch {env["torch"]}, device {env["device"]}' +
          (f' ({env["gpu"]}, CUDA {env["cuda"]})' if 'gpu' in env else '') +
          f', dtype {report["settings"]["dtype"]}')
    for name, arch in report['archs'].items():
        print(f'\nEVA-02 {name}: attention path: {arch["attention_path"]}')
        print(f'{"arm":<20}{"img/s":>9}{"median ms":>11}{"tokens":>9}'
              f'{"keep":>7}{"peak MiB":>10}')
        for arm, r in arch['arms'].items():
            print(f'{arm:<20}{r["img_s"]:>9.2f}{r["median_ms"]:>11.2f}'
                  f'{r["tokens"]:>9}{r["keep_ratio"]:>7.3f}'
                  f'{r["peak_mib"]:>10.0f}')
        s = arch['summary']
        print(f'APT speed-up vs plain square {s["speedup_vs_plain_square"]}, '
              f'vs plain window-padded {s["speedup_vs_plain_window"]}; '
              f'token ratio {s["token_ratio"]} (vs window-padded '
              f'{s["token_ratio_vs_plain_window"]}); padding-free APT vs '
              f'plain window-padded {s["nopad_speedup_vs_plain_window"]} '
              f'(token ratio {s["nopad_token_ratio_vs_plain_window"]})')
        if arch['varlen_vs_padded']:
            worst = max(c['rel_l2_diff'] for c in arch['varlen_vs_padded'])
            print(f'varlen vs padded APT: worst relative L2 difference '
                  f'{worst:.2e}, varlen speed-up '
                  f'{s["varlen_speedup_vs_padded"]}')


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    views = load_views(args)
    report = dict(
        environment=environment(device),
        settings=dict(
            canvas=args.canvas,
            dtype=args.dtype,
            thresholds=args.thresholds,
            repeat=args.repeat,
            warmup=args.warmup,
            batch_size=1,
            images=[
                dict(
                    name=v['name'],
                    size=v['size'],
                    content=v['content'],
                    window_view=list(v['window'].shape[2:]),
                    nopad_view=list(v['nopad'].shape[2:])) for v in views
            ]),
        archs={})
    with torch.no_grad():
        for name in args.archs:
            report['archs'][name] = bench_arch(name, args, views, device)
            if device.type == 'cuda':  # the models are gone: free memory
                torch.cuda.empty_cache()
            # Written after every architecture: a partial run still counts.
            report['seconds'] = round(time.perf_counter() - start, 1)
            with open(args.out, 'w') as f:
                json.dump(report, f, indent=1)
    print_summary(report)
    print(f'\nwrote {args.out} in {report["seconds"]:.0f} s')


if __name__ == '__main__':
    sys.exit(main())
