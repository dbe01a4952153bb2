"""Arms, interleaving, clocks and summaries shared by the benchmark tools.

An *arm* is one way of running the same work (plain square, APT
padding-free, a CUDA graph, ...). The tools run every arm on every item
(image) in the same process, A B A B ..., rotating which arm goes first at
every repeat, so a drifting clock or a busy machine slows all arms alike;
they keep each item's timings per arm and report per-item medians summed
over the items, and ratios of those sums.
"""
import os
import platform
import statistics
import subprocess
import time
from typing import (Callable, Dict, Hashable, Iterator, List, Optional,
                    Sequence, Tuple, TypeVar)

import torch

#: Host clocks (seconds): wall clock, or this process's CPU time (all
#: threads summed; steadier on a machine shared with other jobs).
CLOCKS: Dict[str, Callable[[], float]] = {
    'wall': time.perf_counter,
    'cpu': time.process_time
}

T = TypeVar('T')
K = TypeVar('K')


def add_clock_argument(parser, default: str = 'wall') -> None:
    """``--clock`` of the benchmark modes (one of :data:`CLOCKS`)."""
    parser.add_argument(
        '--clock',
        choices=sorted(CLOCKS),
        default=default,
        help='wall: elapsed time; cpu: CPU time of this process, all '
        'threads summed (steadier on a machine shared with other jobs; CPU '
        f'runs only); default: {default}')


def add_threads_argument(parser) -> None:
    """``--threads``: torch's CPU threads for the run (:func:`set_threads`)."""
    parser.add_argument(
        '--threads',
        type=int,
        default=None,
        help="torch CPU threads (torch.set_num_threads); default: torch's")


def set_threads(threads: Optional[int]) -> None:
    """Apply ``--threads`` (None or 0: leave torch's setting)."""
    if threads:
        torch.set_num_threads(threads)


def get_clock(name: str, device: torch.device) -> Callable[[], float]:
    """The host clock ``name``; CUDA work is timed with events, so only the
    wall clock makes sense beside it."""
    if name not in CLOCKS:
        raise SystemExit(f'--clock {name}: one of {sorted(CLOCKS)}')
    if device.type == 'cuda' and name != 'wall':
        raise SystemExit('--clock cpu is for CPU runs (CUDA uses events)')
    return CLOCKS[name]


def rotated(arms: Sequence[T], rep: int) -> List[T]:
    """``arms`` starting at arm ``rep % len(arms)``: the order of repeat
    ``rep``."""
    first = rep % len(arms)
    return list(arms[first:]) + list(arms[:first])


def interleaved(arms: Sequence[T], items: Sequence[K],
                repeat: int) -> Iterator[Tuple[int, K, T]]:
    """``(repeat, item, arm)`` in benchmark order: every repeat runs every
    item through every arm back to back, the first arm rotating."""
    for rep in range(repeat):
        order = rotated(arms, rep)
        for item in items:
            for arm in order:
                yield rep, item, arm


class Arm:
    """One arm: its name and its timings (and token counts), item by item.

    The one arm concept of every benchmark: subclasses say how an arm runs
    (:class:`~mmapt.benchmark.runner.BackboneArm`: a backbone call on an
    input view; :class:`~mmapt.benchmark.pipeline.PipelineArm`: a whole
    model through its test pipeline; :class:`~mmapt.benchmark.train.
    TrainArm`: a training iteration), this class what they record. Every
    run of an item adds one entry: a dict of millisecond values
    (``model_ms`` and any split of it). Summaries take the median over an
    item's entries, then sum or take the median over the items.

    Args:
        name (str): The arm's name in reports.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.entries: Dict[Hashable, List[Dict[str, float]]] = {}
        self.tokens: Dict[Hashable, Tuple[int, int]] = {}

    def add(self, item: Hashable, **values: float) -> None:
        self.entries.setdefault(item, []).append(dict(values))

    def set_tokens(self, item: Hashable, tokens: int, baseline: int) -> None:
        """Tokens of ``item`` and those of the square plain model."""
        self.tokens[item] = (int(tokens), int(baseline))

    @property
    def items(self) -> List[Hashable]:
        return list(self.entries)

    def keys(self) -> List[str]:
        return sorted(
            {k
             for es in self.entries.values()
             for e in es
             for k in e})

    def times(self, item: Hashable, key: str = 'model_ms') -> List[float]:
        return [e[key] for e in self.entries.get(item, ()) if key in e]

    def medians(self) -> Dict[Hashable, Dict[str, float]]:
        """Per item, the median of every key over its runs."""
        return {
            item: {
                k: statistics.median(e[k] for e in es if k in e)
                for k in self.keys() if any(k in e for e in es)
            }
            for item, es in self.entries.items()
        }

    def total(self, key: str = 'model_ms') -> float:
        """Sum over the items of the per-item medians of ``key``."""
        return sum(m.get(key, 0.) for m in self.medians().values())

    def totals(self) -> Dict[str, float]:
        medians = self.medians().values()
        return {k: sum(m.get(k, 0.) for m in medians) for k in self.keys()}

    def median(self, key: str = 'model_ms') -> float:
        """Median over the items of the per-item medians."""
        return statistics.median(m[key] for m in self.medians().values())

    def img_s(self, key: str = 'model_ms') -> float:
        """Items per second: items / sum of the per-item medians."""
        return len(self.entries) / self.total(key) * 1e3

    def total_tokens(self) -> int:
        return sum(t for t, _ in self.tokens.values())

    def total_baseline_tokens(self) -> int:
        return sum(b for _, b in self.tokens.values())


def ratio(num: Optional[float],
          den: Optional[float],
          digits: int = 4) -> Optional[float]:
    """``num / den`` rounded, None when either is missing or ``den`` is 0."""
    if num is None or not den:
        return None
    return round(num / den, digits)


def settings_of(args, *names: str) -> dict:
    """The command-line settings ``names`` of ``args``, for a report."""
    return {name: getattr(args, name) for name in names}


def compare_outputs(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Largest absolute and relative L2 difference of ``a`` against ``b``."""
    a, b = a.float(), b.float()
    diff = (a - b).abs()
    return dict(
        max_abs_diff=float(diff.max()),
        rel_l2_diff=float((a - b).norm() / b.norm().clamp_min(1e-12)),
        max_abs_value=float(b.abs().max()))


def git_commit(path: str) -> Optional[str]:
    """The commit checked out at ``path`` (None outside a git work tree)."""
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'],
                              capture_output=True,
                              text=True,
                              cwd=path,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    """Versions, threads, GPU name and commit, for a benchmark's JSON."""
    env = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        device=str(device),
        cpu_threads=torch.get_num_threads())
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda)
    env['git_commit'] = git_commit(os.path.dirname(os.path.abspath(__file__)))
    return env
