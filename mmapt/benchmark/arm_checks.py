"""Checks beside an arm's times: outputs against the eager reference, the
stage split of a forward, and the aten ops / host syncs it issues."""
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from mmapt.benchmark.overhead import count_overhead
from .core import compare_outputs
from .cuda import autocast_for
from .runner import BackboneArm, split_of

Inputs = Dict[str, Dict[str, torch.Tensor]]

#: (arm, its eager reference) pairs whose outputs are compared.
CHECK_PAIRS = [
    ('plain_square_graph', 'plain_square'),
    ('plain_window_graph', 'plain_window'),
    ('plain_square_compiled', 'plain_square'),
    ('apt_static', 'apt_square'),
    ('apt_static_graph', 'apt_static'),
    ('apt_nomerge', 'plain_square'),
    ('apt_square_padded', 'apt_square'),
]


def run_checks(inputs: Inputs,
               arms: Dict[str, BackboneArm],
               pairs: Sequence[Tuple[str, str]] = CHECK_PAIRS) -> dict:
    """Per pair whose two arms both ran, the image whose first output
    differs most (relative L2) from the reference's, with the difference."""
    checks = {}
    with torch.no_grad():
        for arm, reference in pairs:
            if arm not in arms or reference not in arms:
                continue
            worst = None
            for image, views in inputs.items():
                out = arms[arm].make(views[arms[arm].view])()[0].clone()
                ref = arms[reference].make(
                    views[arms[reference].view])()[0].clone()
                diff = compare_outputs(out, ref)
                if worst is None or diff['rel_l2_diff'] > worst['rel_l2_diff']:
                    worst = dict(image=image, **diff)
            checks[f'{arm}_vs_{reference}'] = worst
    return checks


def stage_splits(
    inputs: Inputs,
    arms: Dict[str, BackboneArm],
    device: torch.device,
    names: Sequence[str] = ('apt_square', 'apt_static', 'plain_square')
) -> dict:
    """Per eager arm of ``names`` that ran: stage times of one forward per
    image, summed, the tokenizer's share and the share outside the
    blocks."""
    out = {}
    for name in names:
        if name not in arms:
            continue
        arm = arms[name]
        per_image, total_ms, stage_ms = {}, 0., {}
        for image, views in inputs.items():
            ms, stages = split_of(
                arm.make(views[arm.view]), device, time.perf_counter,
                arm.model)
            per_image[image] = dict(
                forward_ms=round(ms, 3),
                **{
                    k: round(v, 3)
                    for k, v in stages.items()
                })
            total_ms += ms
            for k, v in stages.items():
                stage_ms[k] = stage_ms.get(k, 0.) + v
        out[name] = dict(
            forward_ms=round(total_ms, 3),
            stages_ms={
                k: round(v, 3)
                for k, v in stage_ms.items()
            },
            tokenizer_share=round(stage_ms.get('tokenizer', 0.) / total_ms, 4),
            outside_blocks_share=round(
                (total_ms - stage_ms.get('blocks', 0.)) / total_ms, 4),
            per_image=per_image)
    return out


def overhead_counts(image: str, runs: Dict[str, Tuple[nn.Module,
                                                      Callable[[], object]]],
                    device: torch.device,
                    dtype: Optional[torch.dtype]) -> dict:
    """Aten ops and host syncs of one forward per run (e.g. plain, APT,
    APT static) of ``image``; ``runs`` maps a name to ``(model, call)``,
    the model whose stage marks split the counts.

    Each run is counted in an autocast context of its own: a shared one
    would hand a later run of the same model the weight casts an earlier
    one cached, and count fewer ops than that run issues alone.
    """
    result: dict = dict(image=image)
    for name, (model, run) in runs.items():
        with torch.no_grad(), autocast_for(device, dtype):
            result[name] = count_overhead(
                run, device=device, model=model).as_dict()
    return result
