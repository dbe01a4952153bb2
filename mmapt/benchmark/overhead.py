"""Count what a forward dispatches and where it waits for the device.

:func:`count_overhead` runs a callable once and reports, per stage of the
forward (the marks of :mod:`mmapt.models.stages` of the model it is given;
code outside every mark is ``'other'``):

* **ops**: every aten op a ``TorchDispatchMode`` sees, views included. On a
  GPU each is (at least) a kernel launch or a few microseconds of host work,
  which is what APT's small bookkeeping ops cost beside half-precision
  blocks.
* **syncs**: host synchronisations, i.e. places where Python needs a value
  the device computes and so waits for the queue to drain. On CUDA they are
  what ``torch.cuda.set_sync_debug_mode('warn')`` reports. On CPU nothing
  ever waits, so the counter finds the places that *would* wait on a GPU:
  Python-level reads of tensor values (``.item()``, ``.tolist()``,
  ``.numpy()``, ``.cpu()``, ``int()`` / ``float()`` / ``bool()`` /
  ``__index__`` of a tensor) and ops whose output shape depends on the data
  (``nonzero``, ``unique*``, ``masked_select``, boolean-mask indexing,
  ``repeat_interleave`` without ``output_size``, ``bincount``, ``equal``,
  ``_local_scalar_dense``...). A read counts once, not once more for the op
  it dispatches.

Counts are deterministic for a given input, so tests pin them; timings are
the benchmark tools' business.
"""
import os
import traceback
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmapt.models.stages import observe_stages

#: Stage of the code that runs outside every ``forward_stage`` mark.
OTHER = 'other'

# Ops that read device data on the host or whose output shape depends on
# the data (the host must know the size to allocate it): a sync on CUDA.
_SYNC_OPS = frozenset({
    '_local_scalar_dense', 'nonzero', 'nonzero_numpy', 'argwhere', 'unique',
    '_unique', '_unique2', 'unique_dim', 'unique_consecutive',
    'unique_dim_consecutive', 'masked_select', 'bincount', 'equal',
    'is_nonzero', 'allclose', 'masked_scatter', '_assert_async'
})
# Python-level reads of tensor values.
_READ_METHODS = ('item', 'tolist', 'numpy', 'cpu', '__int__', '__float__',
                 '__bool__', '__index__', '__complex__')
_HERE = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


@dataclass
class OverheadCounts:
    """What one call dispatched, per stage.

    Attributes:
        ops (dict): Aten ops dispatched per stage (``'other'`` for code
            outside every mark).
        syncs (dict): Host synchronisations per stage.
        sync_sites (list[str]): One line per sync: its stage, what it was
            (an op or a Python call) and the source line that caused it.
        op_names (dict): Per stage, how often each aten op (overload name)
            was dispatched: where the ops go.
    """

    ops: Dict[str, int] = field(default_factory=dict)
    syncs: Dict[str, int] = field(default_factory=dict)
    sync_sites: List[str] = field(default_factory=list)
    op_names: Dict[str, Dict[str, int]] = field(default_factory=dict)

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def total_syncs(self) -> int:
        return sum(self.syncs.values())

    @property
    def outside_blocks(self) -> int:
        """Ops of every stage but ``'blocks'``: APT's own work."""
        return sum(n for stage, n in self.ops.items() if stage != 'blocks')

    def as_dict(self) -> dict:
        return dict(
            ops=dict(self.ops),
            syncs=dict(self.syncs),
            sync_sites=list(self.sync_sites),
            op_names={
                k: dict(v)
                for k, v in self.op_names.items()
            },
            total_ops=self.total_ops,
            total_syncs=self.total_syncs,
            outside_blocks=self.outside_blocks)


def _caller() -> str:
    """``path:line (function)`` of the innermost frame outside torch and
    this module."""
    for frame in reversed(traceback.extract_stack()):
        path = os.path.abspath(frame.filename)
        if path.startswith(_HERE + os.sep + 'overhead') or \
                path.startswith(_TORCH_DIR) or '<frozen' in frame.filename:
            continue
        try:
            path = os.path.relpath(path)
        except ValueError:  # another drive (Windows)
            pass
        return f'{path}:{frame.lineno} ({frame.name})'
    return '?'


def _is_sync_op(func, args, kwargs) -> bool:
    name = func._schema.name.split('::')[-1]
    if name in _SYNC_OPS:
        return True
    if name == 'repeat_interleave':  # Tensor repeats: size from the data
        return func._overloadname in ('Tensor', 'self_Tensor') and \
            kwargs.get('output_size') is None
    if name in ('index', 'index_put', 'index_put_', '_index_put_impl_'):
        indices = args[1] if len(args) > 1 else kwargs.get('indices', ())
        return any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool,
                                                        torch.uint8)
            for i in (indices or ()))
    return False


class _Counter(TorchDispatchMode):

    def __init__(self, counts: OverheadCounts, cpu_rules: bool) -> None:
        super().__init__()
        self.counts = counts
        self.cpu_rules = cpu_rules
        self.stack: List[str] = []
        self.reading = 0  # > 0 inside a Python-level read

    @property
    def stage(self) -> str:
        return self.stack[-1] if self.stack else OTHER

    def on_stage(self, name: str, entering: bool) -> None:
        if entering:
            self.stack.append(name)
        elif self.stack:
            self.stack.pop()

    def sync(self, what: str) -> None:
        stage = self.stage
        self.counts.syncs[stage] = self.counts.syncs.get(stage, 0) + 1
        self.counts.sync_sites.append(f'{stage}: {what} at {_caller()}')

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stage = self.stage
        self.counts.ops[stage] = self.counts.ops.get(stage, 0) + 1
        names = self.counts.op_names.setdefault(stage, {})
        name = str(func)
        names[name] = names.get(name, 0) + 1
        if self.cpu_rules and not self.reading and _is_sync_op(
                func, args, kwargs):
            self.sync(str(func))
        return func(*args, **kwargs)


@contextmanager
def _count_reads(counter: _Counter) -> Iterator[None]:
    """Wrap the value-reading methods of ``torch.Tensor`` while counting."""
    saved = []
    for name in _READ_METHODS:
        inner = getattr(torch.Tensor, name)

        def read(self, *args, _name=name, _inner=inner, **kwargs):
            if counter.reading:
                return _inner(self, *args, **kwargs)
            counter.sync(f'Tensor.{_name}()')
            counter.reading += 1
            try:
                return _inner(self, *args, **kwargs)
            finally:
                counter.reading -= 1

        saved.append((name, torch.Tensor.__dict__.get(name)))
        setattr(torch.Tensor, name, read)
    try:
        yield
    finally:
        for name, original in saved:
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


@contextmanager
def _cuda_sync_warnings(counter: _Counter,
                        device: torch.device) -> Iterator[None]:
    """Count the syncs CUDA's sync debug mode warns about."""
    previous_mode = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter('always')
        shown = warnings.showwarning

        def show(message, category, *args, **kwargs):
            text = str(message)
            if 'synchroniz' in text.lower():
                counter.sync(text.splitlines()[0])
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode('warn')
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
            torch.cuda.synchronize(device)


def count_overhead(fn: Callable[[], Any],
                   device: Optional[Union[str, torch.device]] = None,
                   model: Optional[nn.Module] = None) -> OverheadCounts:
    """Call ``fn()`` once and count its ops and host syncs per stage.

    Args:
        fn (Callable): The work to count, e.g. ``lambda: model(images)``.
        device (str | torch.device, optional): Where ``fn`` runs. On a CUDA
            device, syncs are the ones ``torch.cuda.set_sync_debug_mode``
            reports; otherwise (None, CPU) they are the Python-level reads
            and data-dependent ops listed in the module docstring, i.e. the
            places that would synchronise on a GPU.
        model (nn.Module, optional): The model whose marked stages split
            the counts (its backbones are listened to while ``fn`` runs);
            None: everything is counted under ``'other'``.

    Returns:
        OverheadCounts: The counts; ``fn``'s result is not kept.
    """
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == 'cuda'
    counts = OverheadCounts()
    counter = _Counter(counts, cpu_rules=not cuda)
    with ExitStack() as stack:
        if model is not None:
            stack.enter_context(observe_stages(model, counter.on_stage))
        if cuda:
            stack.enter_context(_cuda_sync_warnings(counter, device))
        else:
            stack.enter_context(_count_reads(counter))
        stack.enter_context(counter)
        fn()
    return counts
