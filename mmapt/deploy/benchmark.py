"""Speed of ONNX Runtime exports: APT vs plain, and vs eager PyTorch.

The arms run interleaved (A B A B ...) per photograph and repeat, in one
process with fixed ``intra_op_num_threads`` (ONNX Runtime) and torch
threads, so that load on a shared machine hits every arm alike. Every APT
export runs each photograph in the bucket its runtime chooses (the token
count graph included in its time). Each graph (arm and bucket) gets one
untimed warm-up run the first time a photograph needs it.

Besides the time, every arm's peak memory during its runs is read from the
kernel (``VmHWM`` of ``/proc/self/status``, reset before each run through
``/proc/self/clear_refs``; Linux only, else not reported): the peak
resident size of the whole process minus its size just before the run,
i.e. what the run itself adds on top of the loaded models.
"""
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mmapt.benchmark.memory import PeakRSS, status_mib
from .graphs import FeatureGraph, fixed_pack_size
from .runtime import LOW_MEMORY_OPTIONS, ONNXRuntimeModel, prepare_image


def timed_run(fn: Callable[[], object]) -> Tuple[float, Optional[float]]:
    """Milliseconds of ``fn()`` and the GiB its run added to the process's
    peak resident size (the kernel's, :class:`~mmapt.benchmark.memory.
    PeakRSS`; None where the kernel does not tell: no sampling thread
    beside a timed run)."""
    with PeakRSS(sample=False) as peak:
        start = time.perf_counter()
        fn()
        ms = (time.perf_counter() - start) * 1e3
    return ms, _gib(peak.extra_mib)


def _gib(mib: Optional[float]) -> Optional[float]:
    return None if mib is None else mib / 2**10


def _ort_arm(runtime: ONNXRuntimeModel):
    """The call of an export on one prepared input (its bucket, chosen by
    the runtime again inside the timed call)."""

    def make(x: np.ndarray, size: Optional[int]):
        return lambda: runtime(x)

    return make


def _eager_arm(model: nn.Module, runtime: ONNXRuntimeModel):
    """The exported graph's forward in eager PyTorch: the feature graph of
    a detector, tensor mode of a segmentor; APT in the bucket ``runtime``
    chose for the input."""
    if runtime.manifest['task'] == 'segmentation':

        def forward(t):
            return model(t, mode='tensor')
    else:
        forward = FeatureGraph(model.backbone, getattr(model, 'neck', None))

    def make(x: np.ndarray, size: Optional[int]):
        tensor = torch.from_numpy(x)

        def run():
            with fixed_pack_size(model.backbone, size), torch.no_grad():
                return forward(tensor)

        return run

    return make


def geometric_mean(values: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))


def benchmark_onnx(apt_dirs: Dict[str, str],
                   plain_dir: str,
                   images: Sequence[np.ndarray],
                   threads: int,
                   repeat: int = 2,
                   apt_model: Optional[nn.Module] = None,
                   plain_model: Optional[nn.Module] = None,
                   session_options: Optional[Dict[str, Any]] = None,
                   on_row: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Milliseconds per image of each arm, interleaved, and its memory.

    Args:
        apt_dirs (dict[str, str]): Export folders of the APT config by arm
            label (e.g. ``{'apt': DIR, 'apt_fine': DIR2}``: other bucket
            sets, or a budget-mode export). The first one is the one the
            eager APT arm runs (in its buckets).
        plain_dir (str): Export folder of the plain config (same exporter).
        images (Sequence[np.ndarray]): RGB uint8 photographs.
        threads (int): ``intra_op_num_threads`` and ``torch`` threads.
        repeat (int): Timed runs per image and arm (after the warm-up).
        apt_model (nn.Module, optional): The APT detector / segmentor for
            the eager PyTorch arm (static mode, same buckets).
        plain_model (nn.Module, optional): The plain one, likewise.
        session_options (dict, optional): ``SessionOptions`` attributes for
            every ONNX Runtime arm alike; None: :data:`LOW_MEMORY_OPTIONS`.
        on_row (callable, optional): Called with each image's row as soon
            as it is measured (long runs keep what they measured).

    Returns:
        dict: per image: bucket and packed tokens of each APT export, the
        median ms of each arm; per arm the largest memory a run added;
        ``summary``: total ms per arm, the plain / APT ratios of the totals
        and their geometric means over the images, ORT vs eager.
    """
    if not apt_dirs:
        raise ValueError('give at least one APT export folder')
    if session_options is None:
        session_options = LOW_MEMORY_OPTIONS
    torch.set_num_threads(threads)

    def load(directory: str) -> ONNXRuntimeModel:
        return ONNXRuntimeModel(
            directory,
            intra_op_num_threads=threads,
            session_options=session_options)

    apts = {f'ort_{label}': load(d) for label, d in apt_dirs.items()}
    plain = load(plain_dir)
    for runtime in apts.values():
        if runtime.input_shape[2:] != plain.input_shape[2:]:
            raise ValueError('the APT and plain exports take different input '
                             'shapes: export all with the same --shape')
    runtimes = dict(apts, ort_plain=plain)
    first = next(iter(apts))
    # arm -> (the runtime whose bucket choice it runs in, its call factory)
    arms = {
        name: (name, _ort_arm(runtime))
        for name, runtime in runtimes.items()
    }
    if apt_model is not None:
        arms['torch_apt'] = (first, _eager_arm(apt_model, apts[first]))
    if plain_model is not None:
        arms['torch_plain'] = ('ort_plain', _eager_arm(plain_model, plain))
    warmed = set()
    memory: Dict[str, float] = {}
    rows: List[Dict] = []
    for rgb in images:
        x = prepare_image(rgb, plain.manifest)
        # (pack size, packed tokens, capped) once per export and image.
        chosen = {
            name: runtime.select_bucket(runtime.check_input(x))
            for name, runtime in runtimes.items()
        }
        calls = {
            name: (chosen[source][0], make(x, chosen[source][0]))
            for name, (source, make) in arms.items()
        }
        for name, (key, call) in calls.items():
            if (name, key) not in warmed:  # first run of this graph
                call()
                warmed.add((name, key))
        times: Dict[str, List[float]] = {name: [] for name in calls}
        for _ in range(repeat):
            for name, (_, call) in calls.items():
                ms, extra = timed_run(call)
                times[name].append(ms)
                if extra is not None:
                    memory[name] = max(memory.get(name, 0.), extra)
        row: Dict[str, Any] = {}
        for name in apts:
            size, needed, capped = chosen[name]
            row[f'{name}_bucket'] = size
            row[f'{name}_capped'] = capped
            # Each export's own count: a budget-mode export's is fixed.
            row[f'{name}_packed_tokens'] = needed
        row.update({f'{k}_ms': float(np.median(v)) for k, v in times.items()})
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return dict(
        threads=threads,
        repeat=repeat,
        session_options=dict(session_options),
        images=rows,
        run_memory_gib=memory,
        loaded_gib=_gib(status_mib('VmRSS')),
        pid=os.getpid(),
        summary=summarise(rows, list(arms), list(apts)))


def summarise(rows: Sequence[Dict], arms: Sequence[str],
              apt_arms: Sequence[str]) -> Dict[str, float]:
    """Totals per arm; plain / APT of the totals and the geometric mean of
    the per-image ratios for every APT export; eager / ORT."""
    total = {k: sum(r[f'{k}_ms'] for r in rows) for k in arms}
    summary: Dict[str, float] = {f'{k}_total_ms': v for k, v in total.items()}
    for name in apt_arms:
        summary[f'{name}_speedup'] = total['ort_plain'] / total[name]
        summary[f'{name}_speedup_geomean'] = geometric_mean(
            [r['ort_plain_ms'] / r[f'{name}_ms'] for r in rows])
    if 'torch_apt' in total:
        apt = apt_arms[0]
        summary['ort_vs_torch_apt'] = total['torch_apt'] / total[apt]
        summary['torch_apt_speedup'] = \
            total.get('torch_plain', float('nan')) / total['torch_apt']
    if 'torch_plain' in total:
        summary['ort_vs_torch_plain'] = \
            total['torch_plain'] / total['ort_plain']
    return summary
