"""RoPE application alone: the real-valued rotation against the complex
product it replaced, on EVA-02-B shapes.

    python -m mmapt.benchmark.rope --tokens 9216 --repeat 15 --threads 1

Every repeat rotates the q|k slice of a fresh (1, tokens, 3, heads, hd)
projection output (as the EVA-02 block does), with each arm in turn,
rotating which goes first; reported: the median per arm and its ratio to
the complex arm, for float32 and for bf16 q|k under CPU autocast (what the
qkv projection yields there). Arms:

* ``complex``: the former ``apply_rope``, ``view_as_real((x0 + i x1) *
  (cos + i sin))`` with complex64 tables (reimplemented here only);
* ``real_inplace``: ``apply_rope(..., inplace=True)``, what the blocks run
  at inference;
* ``real``: ``apply_rope`` returning a new tensor, what they run under
  autograd.

``--compile``: ``complex`` and ``real`` each through ``torch.compile``
(inductor; ``real_inplace`` compiles to the same fused expression as
``real``, so it is left out); the first run of each dtype, which
compiles, is not counted.
"""
import argparse
import json
import statistics
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from mmapt.models.layers.rope import RotaryEmbedding2D, apply_rope
from .core import (CLOCKS, add_clock_argument, add_threads_argument,
                   interleaved, set_threads)


def complex_rope(x: Tensor, table: Tensor) -> Tensor:
    """The complex-product rotation ``apply_rope`` used before it went
    real: ``table`` (..., head_dim / 2) complex64 ``cos + i sin``."""
    xf = x
    if x.dtype not in (torch.float32, torch.float64) or x.stride(-1) != 1 \
            or any(s % 2 for s in x.stride()[:-1]):
        xf = x.float().contiguous()  # complex views need even strides
    pairs = torch.view_as_complex(xf.unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * table).flatten(-2).to(x.dtype)


def rope_arms(side: int,
              head_dim: int,
              compiled: bool = False) -> Dict[str, Callable[[Tensor], Tensor]]:
    """Arm name -> ``rotate(qkv)`` for a ``side x side`` token grid."""
    rope = RotaryEmbedding2D(head_dim, 16)
    table = rope.grid(side, side, torch.device('cpu'))[:, None, None]
    rows = torch.arange(side).float()
    coords = torch.stack(torch.meshgrid(rows, rows, indexing='ij'), -1)
    angles = rope.angles(coords.reshape(-1, 2), (side, side))
    complex_table = torch.polar(torch.ones_like(angles), angles)[:, None, None]
    arms = dict(
        complex=lambda qkv: complex_rope(qkv[..., :2, :, :], complex_table),
        real_inplace=lambda qkv: apply_rope(
            qkv[..., :2, :, :], table, inplace=True),
        real=lambda qkv: apply_rope(qkv[..., :2, :, :], table))
    if compiled:
        arms = {
            name: torch.compile(arms[name], dynamic=False)
            for name in ('complex', 'real')
        }
    return arms


def time_rope(tokens: int = 9216,
              heads: int = 12,
              head_dim: int = 64,
              repeat: int = 15,
              dtypes: Sequence[str] = ('float32', 'bfloat16'),
              clock: str = 'cpu',
              compiled: bool = False) -> dict:
    """Median milliseconds per arm and dtype, and each arm's ratio to
    ``complex`` (below 1: faster). ``tokens`` must be a square."""
    side = int(round(tokens**0.5))
    if side * side != tokens:
        raise ValueError(f'--tokens {tokens} is not a square grid; use e.g. '
                         '9216 (EVA-02-B at 1536 px)')
    arms = rope_arms(side, head_dim, compiled)
    timer = CLOCKS[clock]
    torch.manual_seed(0)
    base = torch.randn(1, tokens, 3, heads, head_dim)
    results = {}
    for name in dtypes:
        dtype = getattr(torch, name)
        qkv = base.to(dtype)
        times: Dict[str, list] = {arm: [] for arm in arms}
        outputs: Dict[str, Optional[Tensor]] = {}
        with torch.no_grad(), torch.autocast(
                'cpu', torch.bfloat16, enabled=dtype == torch.bfloat16):
            for _, _, arm in interleaved(list(arms), [0], repeat + 1):
                fresh = qkv.clone()  # a new projection output each time
                start = timer()
                out = arms[arm](fresh)
                times[arm].append((timer() - start) * 1e3)
                outputs[arm] = out
        want = outputs['complex'].float()
        medians = {
            arm: statistics.median(ts[1:])  # the first run warms up
            for arm, ts in times.items()
        }
        results[name] = dict(
            ms={
                arm: round(ms, 2)
                for arm, ms in medians.items()
            },
            ratio_to_complex={
                arm: round(ms / medians['complex'], 3)
                for arm, ms in medians.items()
            },
            max_abs_diff={
                arm: float((out.float() - want).abs().max())
                for arm, out in outputs.items()
            })
    return dict(
        shape=dict(tokens=tokens, heads=heads, head_dim=head_dim),
        repeat=repeat,
        clock=clock,
        compiled=compiled,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        results=results)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--tokens', type=int, default=9216)
    parser.add_argument('--heads', type=int, default=12)
    parser.add_argument('--head-dim', type=int, default=64)
    parser.add_argument('--repeat', type=int, default=15)
    add_clock_argument(parser, default='cpu')
    add_threads_argument(parser)
    parser.add_argument(
        '--compile', action='store_true', help='torch.compile both arms')
    args = parser.parse_args(argv)
    set_threads(args.threads)
    print(
        json.dumps(
            time_rope(
                args.tokens,
                args.heads,
                args.head_dim,
                args.repeat,
                clock=args.clock,
                compiled=args.compile)))


if __name__ == '__main__':
    main()
