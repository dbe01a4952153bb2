"""Compiled or CUDA-graphed inference forwards of a backbone (``accelerate``).

A backbone built with ``accelerate='compile'`` or ``'cuda_graphs'`` runs
its inference forwards (eval mode, no autograd) through an
:class:`Accelerator`: one compiled function (``torch.compile``, inductor,
``fullgraph=True``, static shapes) or one captured CUDA graph
(:class:`GraphedForward`) per shape key, made on the key's first call and
kept for the backbone's life. The plain backbone's key is (batch, height,
width, dtype, autocast); an APT backbone's adds the token bucket it chose
for the batch (its static-shape mode, see ``APTAdapter.select_pack_size``).

What a captured or compiled region must not do, and what is done instead:

* report token counts to observers (Python callbacks): the region's
  :meth:`~mmapt.models.backbones.TokenObservable.notify_tokens` calls are
  collected as tensors (``collect_token_reports``) and the accelerator
  hands them to the observers after each call;
* mark forward stages (``mmapt.models.stages``): no marks inside (a
  profiler sees the accelerated forward as one piece);
* let a cache free a tensor the graph reads: every cached value touched
  during a capture is pinned by the graph (:mod:`mmapt.tokenizer.cache_pins`).
"""
import time
from contextlib import contextmanager, nullcontext
from typing import (Callable, Dict, Hashable, Iterator, List, Optional,
                    Sequence, Tuple, Union)

import torch
from mmengine.logging import MMLogger
from torch import Tensor

from mmapt.models.stages import stages_unmarked
from mmapt.tokenizer.cache_pins import pin_cached_values

#: The values of a backbone's ``accelerate`` argument besides None.
ACCELERATE_MODES = ('compile', 'cuda_graphs')

#: Compiled shape keys one backbone may hold before torch.compile would
#: give up on new ones (each key is one entry of dynamo's cache).
MAX_COMPILED_KEYS = 64


def check_accelerate(value: Optional[str]) -> Optional[str]:
    """``value`` when it is None or one of :data:`ACCELERATE_MODES`;
    ValueError naming the choices otherwise."""
    if value is not None and value not in ACCELERATE_MODES:
        raise ValueError(f'accelerate must be None or one of '
                         f'{ACCELERATE_MODES}, got {value!r}')
    return value


def autocast_state(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype active for ``device`` (None when off): part of
    a shape key, since it changes every kernel of the forward."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


@contextmanager
def _uncached_autocast(device: torch.device) -> Iterator[None]:
    """Re-enter the active autocast without its weight-cast cache: a cast
    cached before the capture would be freed when the caller's autocast
    exits while the graph still reads it."""
    dtype = autocast_state(device)
    context = nullcontext() if dtype is None else torch.autocast(
        device.type, dtype=dtype, cache_enabled=False)
    with context:
        yield


class GraphedForward:
    """``fn(*inputs)`` captured once as a CUDA graph, replayed on new
    inputs of the same shapes (copied into the captured input buffers).

    Every cached tensor the forward took during warm-up and capture is
    pinned for the life of this object (``pinned``), so bounded caches may
    evict entries without freeing memory the graph reads.

    Args:
        fn (Callable): ``fn(*inputs) -> outputs`` (tensors, or tuples of
            them); must not synchronize the host and must give the same
            shapes every call.
        example (Tensor | Sequence[Tensor]): The input(s) of the shapes to
            capture.
        warmup (int): Eager calls on a side stream before the capture
            (allocator, cuDNN / cuBLAS handles, caches the forward fills).
    """

    def __init__(self,
                 fn: Callable[..., object],
                 example: Union[Tensor, Sequence[Tensor]],
                 warmup: int = 3) -> None:
        examples = (example, ) if isinstance(example,
                                             Tensor) else tuple(example)
        self.inputs = tuple(e.clone() for e in examples)
        device = self.inputs[0].device
        with pin_cached_values() as pins, _uncached_autocast(device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(warmup):
                    fn(*self.inputs)
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.output = fn(*self.inputs)
            torch.cuda.synchronize()
        self.pinned: List[object] = pins

    @property
    def input(self) -> Tensor:
        """The first captured input buffer."""
        return self.inputs[0]

    def __call__(self, *inputs: Tensor):
        if len(inputs) != len(self.inputs):
            raise ValueError(f'captured with {len(self.inputs)} inputs, '
                             f'called with {len(inputs)}')
        for buffer, x in zip(self.inputs, inputs):
            buffer.copy_(x)
        self.graph.replay()
        return self.output


#: ``fn(*inputs) -> (outputs, token reports)``: one accelerated forward; a
#: report is the arguments of one ``notify_tokens`` call.
Runner = Callable[..., Tuple[Tuple[Tensor, ...], List[tuple]]]


class Accelerator:
    """The accelerated forwards of one backbone, one per shape key.

    Not a module and holds no weights: copies of the backbone
    (``copy.deepcopy``, pickling) start with no forwards made.

    Args:
        mode (str): ``'compile'`` or ``'cuda_graphs'``.
        owner (str): The backbone's class name, for the log line.
    """

    def __init__(self, mode: str, owner: str = 'backbone') -> None:
        if check_accelerate(mode) is None:
            raise ValueError('an Accelerator needs a mode, got None')
        self.mode = mode
        self.owner = owner
        self.runners: Dict[Hashable, Runner] = {}
        #: Seconds the first call of each key took (compile or capture
        #: included).
        self.build_seconds: Dict[Hashable, float] = {}
        self._said_eager = False

    def __deepcopy__(self, memo: dict) -> 'Accelerator':
        return Accelerator(self.mode, self.owner)

    def __reduce__(self):
        return (Accelerator, (self.mode, self.owner))

    def available(self, device: torch.device) -> bool:
        """Whether this mode runs on ``device``; CUDA graphs off CUDA say
        so once in the log (the backbone then runs eager)."""
        if self.mode != 'cuda_graphs' or device.type == 'cuda':
            return True
        if not self._said_eager:
            MMLogger.get_current_instance().warning(
                f'{self.owner}: accelerate=\'cuda_graphs\' needs a CUDA '
                f'device, the input is on {device}: running eager (use '
                'accelerate=\'compile\' on a CPU)')
            self._said_eager = True
        return False

    def __call__(self, host, key: Hashable,
                 make_fn: Callable[[], Callable[..., Tuple[Tensor, ...]]],
                 inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """The accelerated forward of ``key`` on ``inputs``.

        Args:
            host (TokenObservable): The backbone: its token counts are
                collected inside the region and announced after it.
            key (Hashable): The shape key (the device and autocast state are
                added here).
            make_fn (Callable): Returns the eager forward ``fn(*inputs)``
                of this key; called once per key.
            inputs (Sequence[Tensor]): The forward's tensor inputs.

        Returns:
            tuple[Tensor]: The forward's outputs (fresh tensors: results of
            an earlier call stay valid).
        """
        device = inputs[0].device
        full_key = (key, str(device), autocast_state(device))
        runner = self.runners.get(full_key)
        with stages_unmarked(host):
            if runner is None:
                start = time.perf_counter()
                runner = self._build(host, make_fn(), inputs)
                outs, reports = runner(*inputs)
                self.runners[full_key] = runner
                self.build_seconds[full_key] = time.perf_counter() - start
            else:
                outs, reports = runner(*inputs)
        if self.mode == 'cuda_graphs':  # the graph's own buffers
            outs = tuple(o.clone() for o in outs)
            reports = [
                tuple(None if t is None else t.clone() for t in report)
                for report in reports
            ]
        for report in reports:
            host.notify_tokens(*report)
        return tuple(outs)

    def _build(self, host, fn: Callable[..., Tuple[Tensor, ...]],
               inputs: Sequence[Tensor]) -> Runner:
        if self.mode == 'cuda_graphs':

            def collected(*args: Tensor):
                with host.collect_token_reports() as reports:
                    outs = fn(*args)
                return tuple(outs), list(reports)

            return GraphedForward(collected, inputs)
        compiled = torch.compile(fn, fullgraph=True, dynamic=False)

        def run(*args: Tensor):
            with host.collect_token_reports() as reports, \
                    torch._dynamo.config.patch(
                        recompile_limit=MAX_COMPILED_KEYS):
                outs = compiled(*args)
            return tuple(outs), list(reports)

        return run
