"""The benchmark tools' library: arms, interleaving, clocks, counters,
summaries (``tools/analysis/benchmark*.py``, ``gpu_benchmark.py``).

Importable with torch, numpy and mmengine only: nothing here imports mmcv,
mmdet or mmseg at module level (the detector training benchmark imports
them when it runs).
"""
from .backbones import (NotAvailable, accelerated_arm, bucket_size,
                        build_backbone_pair, count_forward_overhead,
                        crop_to_multiple, forward_tokens, packed_to,
                        photo_views, static_arm, static_mode_available)
from .core import (CLOCKS, ArmRecord, compare_outputs, environment, get_clock,
                   interleaved, ratio, rotated)
from .runner import BackboneArm, arm_summary, prepare_arms, time_arms

__all__ = [
    'NotAvailable', 'accelerated_arm', 'bucket_size', 'build_backbone_pair',
    'count_forward_overhead', 'crop_to_multiple', 'forward_tokens',
    'packed_to', 'photo_views', 'static_arm', 'static_mode_available',
    'CLOCKS', 'ArmRecord', 'compare_outputs', 'environment', 'get_clock',
    'interleaved', 'ratio', 'rotated', 'BackboneArm', 'arm_summary',
    'prepare_arms', 'time_arms'
]
