"""The benchmark tools' library: arms, interleaving, clocks, counters,
summaries (``tools/analysis/benchmark.py`` and its modes,
``gpu_benchmark.py``).

Importable with torch, numpy and mmengine only: nothing here imports mmcv,
mmdet or mmseg at module level (the detector benchmarks import them when
they run).
"""
from .backbones import (accelerated_arm, bucket_size, build_backbone_pair,
                        count_forward_overhead, crop_to_multiple,
                        forward_tokens, packed_to, photo_views, static_arm)
from .core import (CLOCKS, Arm, compare_outputs, environment, get_clock,
                   interleaved, ratio, rotated)
from .runner import BackboneArm, arm_summary, prepare_arms, time_arms

__all__ = [
    'accelerated_arm', 'bucket_size', 'build_backbone_pair',
    'count_forward_overhead', 'crop_to_multiple', 'forward_tokens',
    'packed_to', 'photo_views', 'static_arm', 'CLOCKS', 'Arm',
    'compare_outputs', 'environment', 'get_clock', 'interleaved', 'ratio',
    'rotated', 'BackboneArm', 'arm_summary', 'prepare_arms', 'time_arms'
]
