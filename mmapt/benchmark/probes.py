"""What an arm really ran: its attention kernel, and for a compiled arm
its graph breaks, recompiles and whether it ran as CUDA graphs."""
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch
from torch import nn

from mmapt.models.layers.attention import (AttentionCallCounter,
                                           VarlenFallbackWarning)
from mmapt.models.observers import HandleGroup, modules_with


def attention_summary(counts: Dict[str, int], errors: List[str]) -> dict:
    """``kernel`` (the kernels that ran, ``+``-joined; ``'none'`` when no
    packed attention ran, e.g. the plain model), the raw ``calls``, the
    ``varlen_failed`` count and up to three distinct ``errors``."""
    ran = [k for k, n in sorted(counts.items()) if n and k != 'varlen_failed']
    return dict(
        kernel='+'.join(ran) if ran else 'none',
        calls=dict(counts),
        varlen_failed=counts.get('varlen_failed', 0),
        errors=sorted(set(errors))[:3])


@contextmanager
def attention_probe(model: nn.Module) -> Iterator[dict]:
    """Count ``model``'s packed-attention calls inside the block by kernel;
    the yielded dict is filled with :func:`attention_summary` on exit (the
    messages of the varlen kernel's refusals included). A model without
    packed attention (no mmapt backbone in it) records ``'none'``."""
    record: dict = {}
    counter = AttentionCallCounter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', VarlenFallbackWarning)
        with HandleGroup([
                m.register_attention_observer(counter)
                for m in modules_with(model, 'register_attention_observer')
        ]):
            yield record
    counts = counter.counts
    errors = []
    for w in caught:
        if issubclass(w.category, VarlenFallbackWarning):
            errors.append(str(w.message))
        else:  # not ours: shown as it would have been
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    record.update(attention_summary(counts, errors))


def dynamo_counts() -> Dict[str, object]:
    """The dynamo / inductor counters a compiled arm is judged by."""
    from torch._dynamo.utils import counters
    return dict(
        frames=counters['frames']['ok'],
        graphs=counters['stats']['unique_graphs'],
        graph_breaks=dict(counters['graph_break']),
        cudagraph_skips=counters['inductor']['cudagraph_skips'])


def cudagraph_tree_nodes(device: torch.device) -> Optional[int]:
    """CUDA graphs recorded so far by torch.compile's CUDA-graph trees on
    ``device`` (None where this torch build does not tell)."""
    if device.type != 'cuda':
        return 0
    try:
        from torch._inductor import cudagraph_trees
        index = device.index if device.index is not None else \
            torch.cuda.current_device()
        manager = cudagraph_trees.get_manager(
            index, create_if_none_exists=False)
        if manager is None:
            return 0
        stack = [n for nodes in manager.roots.values() for n in nodes]
        total = 0
        while stack:
            node = stack.pop()
            total += 1
            stack.extend(c for cs in node.children.values() for c in cs)
        return total
    except Exception:  # noqa: BLE001 - private API, changes between builds
        return None


class CompileWatch:
    """The dynamo / inductor counters around a compiled arm's warm-up.

    Call :meth:`first_call_done` after the first call (the compile) and
    :meth:`record` after the last warm-up: every frame compiled after the
    first call, on inputs of one shape, is a recompile.

    Args:
        device (torch.device): Where the compiled model runs.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.before = dynamo_counts()
        self.nodes_before = cudagraph_tree_nodes(device)
        self.after_first: Optional[Dict[str, object]] = None

    def first_call_done(self) -> None:
        if self.after_first is None:
            self.after_first = dynamo_counts()

    def record(self) -> dict:
        """``graphs_compiled``, ``graph_breaks`` (with their reasons),
        ``recompiles``, ``cudagraph_skips``, ``cuda_graphs_recorded`` and
        ``ran_as_cuda_graphs`` (None where the build does not tell)."""
        after = dynamo_counts()
        first = self.after_first or after
        before_breaks = self.before['graph_breaks']
        reasons = {
            k: n - before_breaks.get(k, 0)
            for k, n in after['graph_breaks'].items()
            if n > before_breaks.get(k, 0)
        }
        skips = after['cudagraph_skips'] - self.before['cudagraph_skips']
        nodes = cudagraph_tree_nodes(self.device)
        recorded = None if nodes is None or self.nodes_before is None \
            else nodes - self.nodes_before
        return dict(
            graphs_compiled=after['graphs'] - self.before['graphs'],
            graph_breaks=sum(reasons.values()),
            graph_break_reasons=dict(list(reasons.items())[:5]),
            recompiles=after['frames'] - first['frames'],
            cudagraph_skips=skips,
            cuda_graphs_recorded=recorded,
            ran_as_cuda_graphs=None
            if recorded is None else bool(recorded > 0 and skips == 0))
