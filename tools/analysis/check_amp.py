"""Check EVA02 / APTEVA02 in mixed precision on this device, and time it.

    python tools/analysis/check_amp.py --device cuda --arch base --canvas 1024
    python tools/analysis/check_amp.py --device cpu --arch tiny --canvas 256 \
        --window-size 8 --dtypes bf16

For the plain and the APT backbone (same random weights, a trained-looking
APT aggregation), in fp32 and under ``torch.autocast`` for every ``--dtypes``:

* inference: median forward time over ``--repeat`` runs (batch ``--batch``
  of generated images: smooth shading, textured boxes, a flat band), output
  dtype, finiteness, relative error against fp32 (Frobenius norm of the
  difference over the norm), and which attention kernel the APT blocks used
  (``flash-varlen``: torch's varlen kernel, CUDA fp16/bf16 only; else the
  padded SDPA fallback);
* training: one forward + backward; loss and gradients finite, the APT
  layers' gradients non-zero; CUDA peak memory.

Exit status 1 when anything is non-finite or an APT gradient is missing.
Needs torch, mmengine and mmapt only (no mmcv / mmdet).
"""
import argparse
import json
import statistics
import sys
import time
from typing import Dict, List, Optional

import torch

import mmapt.models.layers.attention as attention
from mmapt.engine.precision import resolve_amp_dtype
from mmapt.models import APTEVA02, EVA02
from mmapt.models.apt import is_apt_backbone
from mmapt.models.backbones import count_tokens


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--arch', default='base')
    parser.add_argument('--canvas', type=int, default=1024)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--window-size', type=int, default=16)
    parser.add_argument(
        '--global-attn-indexes', type=int, nargs='*', default=[2, 5, 8, 11])
    parser.add_argument(
        '--thresholds', type=float, nargs='+', default=[2.0, 2.0, 0.3])
    parser.add_argument(
        '--dtypes',
        nargs='+',
        default=['fp16', 'bf16'],
        choices=['fp16', 'bf16'])
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument(
        '--json',
        action='store_true',
        help='print one JSON object as the last line')
    return parser.parse_args(argv)


def make_images(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """Normalised (B, 3, size, size) images with flat and textured parts."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, size)
    x = (ramp[None, :, None] * ramp[None, None, :]).expand(
        batch, 3, size, size).clone()
    for b in range(batch):
        for _ in range(4):
            h, w = (
                int(v) for v in torch.randint(
                    size // 8, size // 3, (2, ), generator=g))
            top, left = (
                int(v) for v in torch.randint(
                    0, size - max(h, w), (2, ), generator=g))
            x[b, :, top:top + h, left:left + w] += torch.randn(
                3, h, w, generator=g)
        x[b, :, :size // 5] = 0.3  # flat band
    return x.to(device)


def build(args, device: torch.device):
    torch.manual_seed(0)
    cfg = dict(
        arch=args.arch,
        img_size=args.canvas,
        window_size=args.window_size,
        global_attn_indexes=tuple(args.global_attn_indexes),
        out_indices=(-1, ))
    plain = EVA02(**cfg)
    apt = APTEVA02(thresholds=tuple(args.thresholds), **cfg)
    apt.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    return {'plain': plain.to(device), 'apt': apt.to(device)}


class KernelCounter:
    """Counts calls of torch's flash varlen kernel made by ``model``."""

    def __init__(self, model) -> None:
        self._counting = attention.count_attention_calls(model)
        self._counts = {'varlen': 0}

    @property
    def calls(self) -> int:
        return self._counts['varlen']

    def __enter__(self) -> 'KernelCounter':
        self._counts = self._counting.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._counting.__exit__(*exc)


def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def run_case(model, x, device, dtype, repeat, ref=None) -> Dict:
    enabled = dtype is not None
    cast = dict(
        device_type=device.type, dtype=dtype or torch.float32, enabled=enabled)
    model.eval()
    times = []
    with torch.no_grad(), KernelCounter(model) as kernel:
        for _ in range(repeat + 1):  # the first run warms up
            sync(device)
            start = time.perf_counter()
            with torch.autocast(**cast):
                out = model(x)[0]
            sync(device)
            times.append((time.perf_counter() - start) * 1000)
    row = dict(
        ms=statistics.median(times[1:]),
        out_dtype=str(out.dtype)[6:],
        finite=bool(torch.isfinite(out).all()),
        flash_varlen_calls=kernel.calls // (repeat + 1))
    if ref is not None:
        row['rel_err'] = ((out.float() - ref).norm() / ref.norm()).item()

    model.train()
    model.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autocast(**cast):
        loss = model(x)[0].float().pow(2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    row['train_finite'] = bool(torch.isfinite(loss)) and all(
        g is not None and bool(torch.isfinite(g).all()) for g in grads)
    if is_apt_backbone(model):
        row['apt_grads_nonzero'] = all(
            p.grad is not None and bool(p.grad.abs().sum() > 0)
            for p in model.apt_embed.parameters())
    if device.type == 'cuda':
        row['train_peak_mib'] = torch.cuda.max_memory_allocated(device) / 2**20
    model.zero_grad(set_to_none=True)
    return row, out


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    models = build(args, device)
    x = make_images(args.batch, args.canvas, device)
    with torch.no_grad(), count_tokens(models['apt']) as counter:
        models['apt'].eval()(x)
    keep = counter.per_image()['keep_ratio'].mean().item()
    gpu_name = torch.cuda.get_device_name(
        device) if device.type == 'cuda' else ''
    print(f'device {device} '
          f'{gpu_name}'
          f' torch {torch.__version__}; APT keep ratio {keep:.3f}')
    results = dict(keep_ratio=keep, cases=[])
    bad = False
    for name, model in models.items():
        ref_row, ref = run_case(model, x, device, None, args.repeat)
        ref = ref.float()
        rows = [('fp32', ref_row)]
        for key in args.dtypes:
            dtype = resolve_amp_dtype(key, device.type)
            row, _ = run_case(model, x, device, dtype, args.repeat, ref)
            rows.append((key, row))
        for key, row in rows:
            row.update(model=name, precision=key)
            results['cases'].append(row)
            bad |= not row['finite'] or not row['train_finite'] or \
                not row.get('apt_grads_nonzero', True)
            print(f'{name:5s} {key:4s} {row["ms"]:9.2f} ms  out '
                  f'{row["out_dtype"]:8s} rel_err '
                  f'{row.get("rel_err", 0):.2e}  flash-varlen calls '
                  f'{row["flash_varlen_calls"]:2d}  finite '
                  f'{row["finite"]}/{row["train_finite"]}  apt grads '
                  f'{row.get("apt_grads_nonzero", "-")}  peak '
                  f'{row.get("train_peak_mib", 0):.0f} MiB')
    if args.json:
        print(json.dumps(results))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
