"""Check EVA02 / APTEVA02 in mixed precision on this device, and time it
(``benchmark.py --check-amp``; ``check_amp.py`` is its alias).

For the plain and the APT backbone (:func:`~mmapt.benchmark.backbones.
build_backbone_pair`: same random weights, a trained-looking APT
aggregation), in fp32 and under ``torch.autocast`` for every ``--dtypes``:

* inference: median forward time over ``--repeat`` runs (batch ``--batch``
  of generated images: smooth shading, textured boxes, a flat band), output
  dtype, finiteness, relative error against fp32 (Frobenius norm of the
  difference over the norm), and how many calls per forward ran torch's
  flash varlen kernel (CUDA fp16/bf16 only; else the padded SDPA plan);
* training: one forward + backward; loss and gradients finite, the APT
  layers' gradients non-zero; CUDA peak memory.

Exit status 1 when anything is non-finite or an APT gradient is missing.
Needs torch, mmengine and mmapt only (no mmcv / mmdet).
"""
import argparse
import json
import statistics
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from mmapt.apis.tool_args import add_json_argument, add_thresholds_argument
from mmapt.benchmark.timing import time_call
from mmapt.engine.precision import add_device_argument, resolve_amp_dtype
from mmapt.models import APTEVA02, EVA02
from mmapt.models.apt import is_apt_backbone
from mmapt.models.backbones import count_tokens
from mmapt.models.layers.attention import count_attention_calls
from .backbones import build_backbone_pair
from .cuda import autocast_for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mixed-precision check's command line."""
    add_device_argument(parser, 'cuda')
    parser.add_argument('--arch', default='base')
    parser.add_argument('--canvas', type=int, default=1024)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--window-size', type=int, default=16)
    parser.add_argument(
        '--global-attn-indexes', type=int, nargs='*', default=[2, 5, 8, 11])
    add_thresholds_argument(parser)
    parser.add_argument(
        '--dtypes',
        nargs='+',
        default=['fp16', 'bf16'],
        choices=['fp16', 'bf16'])
    parser.add_argument('--repeat', type=int, default=5)
    add_json_argument(parser)


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


def check_case(
        model: nn.Module,
        x: torch.Tensor,
        dtype: Optional[torch.dtype],
        repeat: int,
        ref: Optional[torch.Tensor] = None) -> Tuple[Dict, torch.Tensor]:
    """Inference and one training step of ``model`` under autocast to
    ``dtype`` (None: fp32): ``(row, first output)``."""
    device = x.device
    model.eval()
    times = []
    with torch.no_grad(), count_attention_calls(model) as calls:
        for _ in range(repeat + 1):  # the first run warms up
            with autocast_for(device, dtype):
                ms, outs = time_call(lambda: model(x), device)
            times.append(ms)
    out = outs[0]
    row = dict(
        ms=statistics.median(times[1:]),
        out_dtype=str(out.dtype)[6:],
        finite=bool(torch.isfinite(out).all()),
        flash_varlen_calls=calls['varlen'] // (repeat + 1))
    if ref is not None:
        row['rel_err'] = ((out.float() - ref).norm() / ref.norm()).item()

    model.train()
    model.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    with autocast_for(device, dtype):
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


def run(args: argparse.Namespace) -> int:
    """Every case of ``args``; the exit status (1: something non-finite or
    an APT gradient missing)."""
    device = torch.device(args.device)
    cfg = dict(
        arch=args.arch,
        img_size=args.canvas,
        window_size=args.window_size,
        global_attn_indexes=tuple(args.global_attn_indexes),
        out_indices=(-1, ))
    plain, apt = build_backbone_pair(EVA02, APTEVA02, cfg,
                                     tuple(args.thresholds), device)
    x = make_images(args.batch, args.canvas, device)
    with torch.no_grad(), count_tokens(apt) as counter:
        apt(x)
    keep = counter.per_image()['keep_ratio'].mean().item()
    gpu_name = torch.cuda.get_device_name(
        device) if device.type == 'cuda' else ''
    print(f'device {device} {gpu_name} torch {torch.__version__}; APT keep '
          f'ratio {keep:.3f}')
    results = dict(keep_ratio=keep, cases=[])
    bad = False
    for name, model in (('plain', plain), ('apt', apt)):
        ref_row, ref = check_case(model, x, None, args.repeat)
        ref = ref.float()
        rows = [('fp32', ref_row)]
        for key in args.dtypes:
            dtype = resolve_amp_dtype(key, device.type)
            rows.append((key, check_case(model, x, dtype, args.repeat,
                                         ref)[0]))
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
