"""Speed of ONNX Runtime exports: APT vs plain, and vs eager PyTorch.

The arms run interleaved (A B A B ...) per photograph and repeat, in one
process with fixed ``intra_op_num_threads`` (ONNX Runtime) and torch
threads, so that load on a shared machine hits every arm alike. The APT
export runs each photograph in the bucket the runtime chooses (the token
count graph included in its time).
"""
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .graphs import FeatureGraph, fixed_pack_size
from .runtime import ONNXRuntimeModel, prepare_image


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def benchmark_onnx(apt_dir: str,
                   plain_dir: str,
                   images: Sequence[np.ndarray],
                   threads: int,
                   repeat: int = 2,
                   apt_model: Optional[nn.Module] = None,
                   plain_model: Optional[nn.Module] = None) -> Dict:
    """Milliseconds per image of each arm, interleaved.

    Args:
        apt_dir (str): Export folder of the APT config.
        plain_dir (str): Export folder of the plain config (same exporter).
        images (Sequence[np.ndarray]): RGB uint8 photographs.
        threads (int): ``intra_op_num_threads`` and ``torch`` threads.
        repeat (int): Timed runs per image and arm (after one warm-up).
        apt_model (nn.Module, optional): The APT detector / segmentor for
            the eager PyTorch arm (static mode, same buckets).
        plain_model (nn.Module, optional): The plain one, likewise.

    Returns:
        dict: per image: bucket, packed tokens and the median ms of each
        arm; ``summary``: the ratios of the summed medians.
    """
    torch.set_num_threads(threads)
    apt = ONNXRuntimeModel(apt_dir, intra_op_num_threads=threads)
    plain = ONNXRuntimeModel(plain_dir, intra_op_num_threads=threads)
    arms: Dict[str, Callable[[np.ndarray], Callable[[], object]]] = {
        'ort_apt': lambda x: (lambda: apt(x)),
        'ort_plain': lambda x: (lambda: plain(x)),
    }
    for name, model, runtime in (('torch_apt', apt_model, apt),
                                 ('torch_plain', plain_model, plain)):
        if model is not None:
            arms[name] = _eager_arm(model, runtime)
    rows: List[Dict] = []
    for rgb in images:
        x = prepare_image(rgb, apt.manifest)
        if x.shape != prepare_image(rgb, plain.manifest).shape:
            raise ValueError('the APT and plain exports take different '
                             'input shapes: export both with the same --shape')
        calls = {name: make(x) for name, make in arms.items()}
        for call in calls.values():
            call()  # warm-up: first-run allocations, graph optimisation
        times: Dict[str, List[float]] = {name: [] for name in calls}
        for _ in range(repeat):
            for name, call in calls.items():
                times[name].append(_timed(call))
        result = apt(x)
        rows.append(
            dict(
                bucket=result.pack_size,
                packed_tokens=result.packed_tokens,
                capped=result.capped,
                **{
                    f'{k}_ms': float(np.median(v))
                    for k, v in times.items()
                }))
    total = {k: sum(r[f'{k}_ms'] for r in rows) for k in arms}
    summary = dict(ort_apt_speedup=total['ort_plain'] / total['ort_apt'])
    if 'torch_apt' in total:
        summary['ort_vs_torch_apt'] = total['torch_apt'] / total['ort_apt']
    if 'torch_plain' in total:
        summary['ort_vs_torch_plain'] = \
            total['torch_plain'] / total['ort_plain']
    return dict(threads=threads, repeat=repeat, images=rows, summary=summary)


def _eager_arm(model: nn.Module, runtime: ONNXRuntimeModel):
    """The exported graph's forward in eager PyTorch: the feature graph of
    a detector, tensor mode of a segmentor; APT in the runtime's bucket."""
    if runtime.manifest['task'] == 'segmentation':

        def forward(t):
            return model(t, mode='tensor')
    else:
        forward = FeatureGraph(model.backbone, getattr(model, 'neck', None))

    def make(x: np.ndarray) -> Callable[[], object]:
        tensor = torch.from_numpy(x)
        size = runtime.select_bucket(x)[0]

        def run():
            with fixed_pack_size(model.backbone, size), torch.no_grad():
                return forward(tensor)

        return run

    return make
