"""FLOPs of a whole model forward, attention counted by attended groups.

Matrix products and convolutions are counted by torch's ``FlopCounterMode``
(``2 m n k`` per product) on the ops that actually ran. Attention is counted
analytically, ``4 * heads * head_dim * sum_g L_g**2`` per call with ``L_g``
the tokens of each attended group (the dense model's whole windows or
images; APT's packed groups, partial windows at their own length), because
no counter sees packed attention and the CPU fallback computes padded
buckets the CUDA varlen kernel does not; the counter's own SDPA / batched
products inside the backbone are dropped in favour of it. FLOPs here are 2 x
multiply-adds (mmengine's and fvcore's "flops" are multiply-adds).
"""
from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmapt.models.layers import SelfAttentionBase
from mmapt.models.observers import HandleGroup, modules_with

# Ops of the backbone that the analytic attention count replaces.
_ATTENTION_OPS = ('bmm', 'baddbmm', 'scaled_dot_product')


class AttentionCount:
    """Analytic FLOPs of every dense or packed attention call of a model.

    Dense calls are those of the model's :class:`SelfAttentionBase` modules
    (every block family's attention derives from it), heard by forward
    pre-hooks; packed calls are heard by an attention observer on every
    backbone of the model (``register_attention_observer``).
    """

    def __init__(self) -> None:
        self.flops = 0

    def _dense(self, module: nn.Module, args: tuple) -> None:
        batch, length, channels = args[0].shape  # whole windows / images
        self.flops += 4 * batch * length * length * channels

    def _packed(self, kernel: str, q: torch.Tensor,
                cu_seqlens: torch.Tensor) -> None:
        if kernel == 'varlen_failed':  # the padded call that follows counts
            return
        lengths = cu_seqlens.diff().to(torch.int64)
        heads, head_dim = q.shape[1], q.shape[2]
        self.flops += 4 * heads * head_dim * int((lengths**2).sum())

    @contextmanager
    def attach(self, model: nn.Module) -> Iterator['AttentionCount']:
        # Module hooks fire on module calls: the dense path, not
        # forward_packed (heard by the attention observers).
        handles = [
            module.register_forward_pre_hook(self._dense)
            for module in model.modules()
            if isinstance(module, SelfAttentionBase)
        ]
        handles += [
            module.register_attention_observer(self._packed)
            for module in modules_with(model, 'register_attention_observer')
        ]
        with HandleGroup(handles):
            yield self


@contextmanager
def count_flops(model: nn.Module) -> Iterator[Dict[str, float]]:
    """Count the FLOPs of everything ``model`` runs inside the block.

    Yields a dict filled on exit: ``backbone``, ``attention`` (its analytic
    part) and ``model`` FLOPs. ``model.backbone`` must be called inside.
    """
    # FlopCounterMode's module tracker hooks the gradients of module inputs:
    # parameters passed as inputs (mmdet does) must not require them.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    result: Dict[str, float] = {}
    attention = AttentionCount()
    try:
        with attention.attach(model), FlopCounterMode(display=False) as mode:
            yield result
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
    per_module = mode.get_flop_counts()
    keys = [k for k in per_module if k.split('.')[-1] == 'backbone']
    if len(keys) != 1:
        raise RuntimeError('cannot find the backbone among the counted '
                           f'modules {list(per_module)[:8]}')
    ops = per_module[keys[0]]
    dropped = sum(n for op, n in ops.items() if any(
        a in str(op) for a in _ATTENTION_OPS))
    result.update(
        backbone=sum(ops.values()) - dropped + attention.flops,
        attention=attention.flops,
        model=mode.get_total_flops() - dropped + attention.flops)
