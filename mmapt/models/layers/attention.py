"""Block-diagonal attention over packed variable-length sequences.

APT packs the tokens of a whole batch into one (N, heads, head_dim) sequence;
each token may only attend to the tokens of its own group (an image, or an
(image, window) pair). ``cu_seqlens`` holds the group offsets, as in
flash-attention's varlen API.

Backends, chosen per model (``backbone.attention_backend``, or scoped with
:func:`attention_backend`; ``'auto'`` by default) and read where the forward
runs: the APT adapter hands the backbone's choice and its attention observers
to every block through the :class:`~mmapt.models.layers.AttentionGroups` of
the forward (:func:`attention_settings`).

* ``'varlen'``: torch's own ``torch.nn.attention.varlen`` (the
  flash-attention varlen kernel, no padding at all; CUDA with fp16/bf16
  only). ``'auto'`` takes it wherever it applies.
* ``'padded'``: a plan of ``scaled_dot_product_attention`` calls, everywhere.
  :class:`VarlenPlan` (exact packing) never builds an N x N mask. All
  groups of equal length -> one ``scaled_dot_product_attention`` call on a
  reshaped *view*, no mask and no copy (APT with nothing merged then costs the
  same as the plain model). Otherwise groups are sorted by length and cut into
  buckets of similar length; a bucket is gathered into a padded batch with a
  key mask (none when its lengths are all equal, no gather when it holds one
  group). Padded query rows are computed and thrown away, padded keys are
  masked, so the result equals per-group attention exactly.

Static-shape mode runs a :class:`StaticPlan` instead, whatever the backend:
shapes that depend on the batch size, grid and ``pack_size`` alone, built
with device-side index arithmetic only (capturable, compilable,
exportable), and one kernel chosen by :func:`static_kernel`: torch's varlen
kernel over offsets of a fixed length on CUDA fp16/bf16
(``'static_varlen'``), else SDPA calls on capacities bounded by the
groups' rank and ``pack_size`` (``'static_sdpa'``).

A plan depends only on ``cu_seqlens``: the APT adapter builds it once per
forward and every block reuses it. Call :meth:`VarlenPlan.prepare` to do its
host-side work ahead of a timed region.
"""
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from mmapt.models.observers import (add_observer, attach_to_modules,
                                    modules_with)

try:  # torch >= 2.9 ships a flash-attention varlen entry point (CUDA only).
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen_attn
except ImportError:  # pragma: no cover - depends on the torch build
    _torch_varlen_attn = None


class VarlenFallbackWarning(RuntimeWarning):
    """torch's varlen kernel raised under ``'auto'``: that call (and that
    call only) ran the padded SDPA plan instead."""


#: The values :func:`attention_backend` accepts.
ATTENTION_BACKENDS = ('auto', 'varlen', 'padded')

#: The kernels an attention observer hears, by name: exact packing's
#: ``'varlen'`` (torch's kernel) and ``'padded'`` (:class:`VarlenPlan`),
#: static mode's ``'static_varlen'`` and ``'static_sdpa'``
#: (:class:`StaticPlan`, see :func:`static_kernel`), and
#: ``'varlen_failed'``: ``'auto'`` tried torch's kernel, it raised, and the
#: padded plan ran instead (heard as ``'padded'`` too).
ATTENTION_CALLS = ('varlen', 'padded', 'varlen_failed', 'static_varlen',
                   'static_sdpa')

#: ``fn(kernel, q, cu_seqlens)`` after every packed attention call:
#: ``kernel`` one of :data:`ATTENTION_CALLS`, ``q`` the (N, heads,
#: head_dim) queries, ``cu_seqlens`` the group offsets attended.
AttentionObserver = Callable[[str, Tensor, Tensor], None]
AttentionObservers = Tuple[AttentionObserver, ...]

_BACKEND = '_attention_backend'
_OBSERVERS = '_attention_observers'


def check_backend(name: str) -> str:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f'attention backend must be one of '
                         f'{ATTENTION_BACKENDS}, got {name!r}')
    return name


class AttentionObservable:
    """Mixin for backbones whose packed attention is observable and whose
    kernel is chosen per instance.

    ``attention_backend`` (``'auto'``, ``'varlen'`` or ``'padded'``, see
    :func:`attention_backend`) is read at every forward;
    :meth:`register_attention_observer` hears every packed attention call
    of this backbone, and no other's.
    """

    @property
    def attention_backend(self) -> str:
        return self.__dict__.get(_BACKEND, 'auto')

    @attention_backend.setter
    def attention_backend(self, name: str) -> None:
        object.__setattr__(self, _BACKEND, check_backend(name))

    def register_attention_observer(self,
                                    fn: AttentionObserver) -> RemovableHandle:
        """Call ``fn(kernel, q, cu_seqlens)`` after every packed attention
        call of this backbone's forwards; ``handle.remove()`` stops it."""
        if not callable(fn):
            raise TypeError(f'attention observer must be callable, got {fn!r}')
        return add_observer(self, _OBSERVERS, fn)


def attention_settings(owner: object) -> Tuple[str, AttentionObservers]:
    """``(backend, observers)`` of ``owner``'s forward as it starts: what
    the forward hands to its attention calls (``'auto'`` and none for an
    object without :class:`AttentionObservable`)."""
    observers = owner.__dict__.get(_OBSERVERS)
    return (owner.__dict__.get(_BACKEND, 'auto'),
            tuple(observers.values()) if observers else ())


@contextmanager
def attention_backend(model: nn.Module, name: str) -> Iterator[None]:
    """Choose the packed-attention kernel of ``model`` (every backbone in
    it) inside the block; the previous choice comes back on exit.

    Args:
        model (nn.Module): A backbone or a model holding one.
        name (str): ``'auto'`` (torch's varlen kernel on CUDA fp16/bf16 when
            it works, else the padded SDPA plan), ``'varlen'`` (the kernel;
            an error where it does not apply) or ``'padded'`` (the plan, on
            every device: to compare or time it).
    """
    check_backend(name)
    modules = list(modules_with(model, 'register_attention_observer'))
    if not modules:
        raise TypeError(f'{type(model).__name__} has no backbone with a '
                        'packed-attention backend; pass an mmapt backbone or '
                        'a model holding one')
    saved = [(m, m.attention_backend) for m in modules]
    for module in modules:
        module.attention_backend = name
    try:
        yield
    finally:
        for module, previous in saved:
            module.attention_backend = previous


class AttentionCallCounter(Mapping):
    """An attention observer counting the calls by kernel: a read-only
    mapping of every name of :data:`ATTENTION_CALLS` to its count.

    The counts live in a small CPU tensor, added to in place: a compiled
    forward mutates it like any buffer and reads no Python int (an int read
    would be a constant dynamo guards on and recompiles for at every call).
    """

    def __init__(self) -> None:
        self.tally = torch.zeros(len(ATTENTION_CALLS), dtype=torch.int64)

    def __call__(self, kernel: str, q: Tensor, cu_seqlens: Tensor) -> None:
        self.tally[ATTENTION_CALLS.index(kernel)] += 1

    def __getitem__(self, kernel: str) -> int:
        if kernel not in ATTENTION_CALLS:
            raise KeyError(kernel)
        return int(self.tally[ATTENTION_CALLS.index(kernel)])

    def __iter__(self) -> Iterator[str]:
        return iter(ATTENTION_CALLS)

    def __len__(self) -> int:
        return len(ATTENTION_CALLS)

    @property
    def counts(self) -> Dict[str, int]:
        return dict(zip(ATTENTION_CALLS, self.tally.tolist()))


@contextmanager
def count_attention_calls(model: nn.Module) -> Iterator[AttentionCallCounter]:
    """Count ``model``'s packed attention calls inside the block by the
    kernel that ran them (:data:`ATTENTION_CALLS`; a fallback counts as
    ``'varlen_failed'`` and ``'padded'``). Other models are not counted.
    """
    counter = AttentionCallCounter()
    with attach_to_modules(model, 'register_attention_observer', counter,
                           'packed attention calls'):
        yield counter


def _notify(observers: AttentionObservers, kernel: str, q: Tensor,
            cu_seqlens: Tensor) -> None:
    for fn in observers:
        fn(kernel, q, cu_seqlens)


# Bucketing cost model. CPU SDPA (6 heads of 64, 2 cores) costs about
# L + L^2 / 80 microseconds per group of L tokens when groups are batched, and
# a separate call adds ~20 us plus ~20 us of slicing and copying here. A
# group joins the current bucket (padded to the bucket's longest group) when
# that costs less than a call of its own: tiny groups batch together, large
# ones run unpadded, one call each.
_QUADRATIC_TOKENS = 80.
_CALL_OVERHEAD = 40.


def _group_cost(length: int) -> float:
    return length + length * length / _QUADRATIC_TOKENS


class _Bucket:
    """One SDPA call: ``num_groups`` groups padded to ``length`` tokens."""

    __slots__ = ('start', 'stop', 'length', 'num_groups', 'gather', 'mask',
                 'valid_rows', 'token_index')

    def __init__(self) -> None:
        # A bucket of one group is the contiguous slice [start, stop).
        self.start: Optional[int] = None
        self.stop: Optional[int] = None
        self.length = 0
        self.num_groups = 0
        self.gather: Optional[Tensor] = None  # (G_b * L_b,) token indices
        self.mask: Optional[Tensor] = None  # (G_b, 1, 1, L_b) bool, True = key
        self.valid_rows: Optional[Tensor] = None  # rows of the padded output
        self.token_index: Optional[Tensor] = None  # their packed positions


class VarlenPlan:
    """How to run block-diagonal attention for one ``cu_seqlens``.

    Args:
        cu_seqlens (Tensor): (G + 1,) int offsets of the groups, starting at 0.
        max_seqlen (int, optional): Longest group; recomputed if None.
        offsets (list[int], optional): ``cu_seqlens`` on the host, when the
            caller has it (the layout reads it once per forward); read from
            the device otherwise.
    """

    def __init__(self,
                 cu_seqlens: Tensor,
                 max_seqlen: Optional[int] = None,
                 offsets: Optional[List[int]] = None) -> None:
        self.cu_seqlens = cu_seqlens
        self.max_seqlen = max_seqlen
        self.offsets = offsets
        self.num_tokens = -1
        self.uniform_length: Optional[int] = None
        self.buckets: List[_Bucket] = []
        self._built = False

    def prepare(self) -> 'VarlenPlan':
        """Do the plan's host-side work now (it is otherwise done at the
        first call; the CUDA varlen kernel never needs it). Idempotent."""
        if self._built:
            return self
        self._built = True
        offsets: List[int] = self.offsets if self.offsets is not None \
            else self.cu_seqlens.tolist()
        if len(offsets) < 2 or offsets[0] != 0:
            raise ValueError('cu_seqlens must start at 0 and hold at least '
                             f'one group, got {offsets[:8]}')
        lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:])]
        if min(lengths) < 0:
            raise ValueError('cu_seqlens must be non-decreasing')
        self.num_tokens = offsets[-1]
        if self.max_seqlen is None:
            self.max_seqlen = max(lengths)
        nonempty = [g for g, n in enumerate(lengths) if n > 0]
        if not nonempty:
            return self
        first = lengths[nonempty[0]]
        if len(nonempty) == len(lengths) and all(n == first for n in lengths):
            self.uniform_length = first
            return self
        self.buckets = self._make_buckets(offsets, lengths, nonempty,
                                          self.cu_seqlens.device)
        return self

    @staticmethod
    def _make_buckets(offsets: List[int], lengths: List[int],
                      groups: List[int],
                      device: torch.device) -> List[_Bucket]:
        order = sorted(groups, key=lambda g: -lengths[g])
        members: List[List[int]] = []
        for g in order:
            n = lengths[g]
            if members and _group_cost(lengths[members[-1][0]]) <= \
                    _group_cost(n) + _CALL_OVERHEAD:
                members[-1].append(g)
                continue
            members.append([g])

        buckets = []
        for group_ids in members:
            bucket = _Bucket()
            bucket.num_groups = len(group_ids)
            bucket.length = lengths[group_ids[0]]
            if len(group_ids) == 1:
                g = group_ids[0]
                bucket.start, bucket.stop = offsets[g], offsets[g + 1]
                buckets.append(bucket)
                continue
            starts = torch.tensor([offsets[g] for g in group_ids],
                                  device=device)
            lens = torch.tensor([lengths[g] for g in group_ids], device=device)
            steps = torch.arange(bucket.length, device=device)
            valid = steps[None, :] < lens[:, None]  # (G_b, L_b)
            # Padding slots read the group's last token: any real token will
            # do, its key is masked and its query row dropped.
            gather = starts[:, None] + torch.minimum(steps[None, :],
                                                     lens[:, None] - 1)
            bucket.gather = gather.reshape(-1)
            real = sum(lengths[g] for g in group_ids)  # host: no read
            if real < bucket.num_groups * bucket.length:
                bucket.mask = valid[:, None, None, :]
                rows = torch.nonzero_static(valid.reshape(-1), size=real)
                bucket.valid_rows = rows = rows.view(-1)
                bucket.token_index = bucket.gather.index_select(0, rows)
            else:
                bucket.token_index = bucket.gather
            buckets.append(bucket)
        return buckets

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of packed (N, heads, head_dim) q, k, v -> same shape."""
        if not self._built:
            self.prepare()
        num_tokens, heads, head_dim = q.shape
        if num_tokens != self.num_tokens:
            raise ValueError(f'cu_seqlens covers {self.num_tokens} tokens, '
                             f'got {num_tokens}')
        if self.uniform_length is not None:
            # A reshape, not a copy: (G, L, h, d) -> (G, h, L, d) views.
            length = self.uniform_length
            groups = num_tokens // length
            out = F.scaled_dot_product_attention(
                *(t.reshape(groups, length, heads, head_dim).transpose(1, 2)
                  for t in (q, k, v)))
            return out.transpose(1, 2).reshape(num_tokens, heads, head_dim)

        out = q.new_empty(num_tokens, heads, v.shape[-1])
        for bucket in self.buckets:
            if bucket.start is not None:
                sl = slice(bucket.start, bucket.stop)
                part = F.scaled_dot_product_attention(
                    *(t[sl].transpose(0, 1)[None] for t in (q, k, v)))
                out[sl] = part[0].transpose(0, 1)
                continue
            shape = (bucket.num_groups, bucket.length, heads, head_dim)
            padded = [
                t.index_select(0, bucket.gather).view(shape).transpose(1, 2)
                for t in (q, k, v)
            ]
            part = F.scaled_dot_product_attention(
                *padded, attn_mask=bucket.mask)
            part = part.transpose(1, 2).reshape(-1, heads, head_dim)
            if bucket.valid_rows is not None:
                part = part.index_select(0, bucket.valid_rows)
            out.index_copy_(0, bucket.token_index, part)
        return out


def varlen_attention(q: Tensor,
                     k: Tensor,
                     v: Tensor,
                     cu_seqlens: Tensor,
                     max_seqlen: int,
                     plan: Optional[VarlenPlan] = None,
                     backend: str = 'auto',
                     observers: tuple = ()) -> Tensor:
    """Block-diagonal attention on packed sequences.

    Token ``i`` attends to every token of its own group
    ``[cu_seqlens[g], cu_seqlens[g + 1])`` and to nothing else; the softmax
    scale is ``head_dim ** -0.5``.

    Args:
        q, k, v (Tensor): Packed (N, heads, head_dim) tensors.
        cu_seqlens (Tensor): (G + 1,) int32 group offsets, starting at 0.
        max_seqlen (int): Length of the longest group.
        plan (VarlenPlan | StaticPlan, optional): A plan built from the
            same ``cu_seqlens``; pass it to reuse it across calls (every
            block of a forward). Built on the fly when None. A
            :class:`StaticPlan` runs its own kernel (static-shape mode).
        backend (str): One of :data:`ATTENTION_BACKENDS` (see
            :func:`attention_backend`). Defaults to ``'auto'``.
        observers (tuple[Callable]): Called ``fn(kernel, q, cu_seqlens)``
            after the call (:data:`AttentionObserver`).

    Returns:
        Tensor: (N, heads, head_dim) attention output.
    """
    if isinstance(plan, StaticPlan):  # static mode: the plan's own kernel
        return plan(q, k, v, observers)
    if _use_varlen_kernel(q, backend):
        try:
            cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
            out = _torch_varlen_attn(q, k, v, cu, cu, max_seqlen, max_seqlen)
            _notify(observers, 'varlen', q, cu_seqlens)
            return out
        except RuntimeError as err:  # no flash kernel for this GPU / build
            if backend == 'varlen':
                raise
            # This call alone falls back; the next one tries the kernel
            # again, so a timing never mixes kernels without a count of it.
            _notify(observers, 'varlen_failed', q, cu_seqlens)
            warnings.warn(
                f'torch varlen attention failed ({err}); this call ran the '
                "padded SDPA plan (attention_backend(model, 'varlen') "
                'raises instead)',
                VarlenFallbackWarning,
                stacklevel=2)
    if plan is None:
        plan = VarlenPlan(cu_seqlens, max_seqlen)
    out = plan(q, k, v)
    _notify(observers, 'padded', q, cu_seqlens)
    return out


def varlen_kernel_applies(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's varlen kernel can run q, k, v on ``device`` in
    ``dtype``: CUDA, fp16 / bf16, and ``torch.nn.attention.varlen`` in
    this torch build (:func:`cuda_varlen_enabled`)."""
    return device.type == 'cuda' and dtype in _HALF and \
        _torch_varlen_attn is not None


def _refuse_varlen(device: torch.device, dtype: torch.dtype) -> None:
    raise ValueError(
        "attention backend 'varlen' needs CUDA fp16/bf16 inputs and "
        'torch.nn.attention.varlen (torch >= 2.9); got '
        f"{device.type} {dtype}. Use attention_backend(model, 'auto')")


def _use_varlen_kernel(q: Tensor, backend: str) -> bool:
    if backend == 'padded':
        return False
    applies = varlen_kernel_applies(q.device, q.dtype)
    if backend == 'varlen' and not applies:
        _refuse_varlen(q.device, q.dtype)
    return applies


#: The kernels a :class:`StaticPlan` can run, by the names
#: :func:`count_attention_calls` counts them under.
STATIC_KERNELS = ('static_varlen', 'static_sdpa')
_HALF = (torch.float16, torch.bfloat16)

# Static SDPA capacities are rounded up to a multiple of this, so the long
# tail of ranks (whose bounds P / i shrink slowly) shares a few calls.
_CAPACITY_STEP = 64


def static_kernel(device: torch.device,
                  dtype: torch.dtype,
                  backend: str = 'auto') -> str:
    """The kernel static-shape mode runs for q, k, v on ``device`` in
    ``dtype`` under attention backend ``backend``.

    ``'static_varlen'``: torch's flash varlen kernel over the layout's
    fixed-length offsets (CUDA fp16/bf16 with ``torch.nn.attention.varlen``;
    ``'auto'`` or ``'varlen'``). ``'static_sdpa'``: the rank-bounded SDPA
    plan of :class:`StaticPlan` (everywhere else, and always under
    ``'padded'``). A rule on the inputs only: the plan never switches
    kernels after a failure.
    """
    if backend == 'padded':
        return 'static_sdpa'
    if varlen_kernel_applies(device, dtype):
        return 'static_varlen'
    if backend == 'varlen':
        _refuse_varlen(device, dtype)
    return 'static_sdpa'


def capacity_classes(num_groups: int, bound: int,
                     num_tokens: int) -> List[Tuple[int, int]]:
    """``(ranks, capacity)`` of every SDPA call of a static plan, largest
    capacity first; a function of its arguments only.

    Groups whose lengths sum to at most ``num_tokens`` (P), sorted by
    length, have their ``i``-th largest (``i`` from 1) no longer than
    ``P / i``: rank ``i`` is given ``min(bound, P // i)`` tokens, rounded up
    to a multiple of 64 (at most ``bound`` and P). Consecutive ranks join
    one call (padded to its first rank's capacity) while that costs less
    than a call of their own (the cost model of :class:`VarlenPlan`).
    """
    classes: List[List[int]] = []
    for rank in range(1, num_groups + 1):
        capacity = max(num_tokens // rank, 1)
        capacity = min(bound, num_tokens,
                       -(-capacity // _CAPACITY_STEP) * _CAPACITY_STEP)
        if classes and _group_cost(classes[-1][1]) <= \
                _group_cost(capacity) + _CALL_OVERHEAD:
            classes[-1][0] += 1
        else:
            classes.append([1, capacity])
    return [(ranks, capacity) for ranks, capacity in classes]


class StaticPlan:
    """Block-diagonal attention with shapes fixed ahead of the data.

    The first ``num_groups`` groups of ``cu_seqlens`` are the real ones
    (together at most ``num_tokens`` tokens, each at most ``max_seqlen``);
    the groups after them (static mode's padding tokens) are attended
    within, or not at all, and their outputs are dropped by the caller.
    Every shape depends only on ``(num_groups, max_seqlen, num_tokens)``
    and nothing is read back to the host, so the plan can be captured,
    compiled whole and exported. It runs one of two kernels
    (:attr:`kernel`, chosen by :func:`static_kernel` at the first call
    unless given):

    * ``'static_varlen'``: torch's flash varlen kernel over the whole
      ``cu_seqlens`` (a fixed number of offsets, padding groups included)
      with ``max_seqlen`` as the fixed bound: its work follows the real
      tokens. CUDA fp16/bf16 only; a failure raises (no fallback).
    * ``'static_sdpa'``: rank-bounded capacities. The groups are sorted by
      length on the device; rank ``i`` gets ``min(max_seqlen, P // i)``
      slots (see :func:`capacity_classes`), so a global group costs about
      the bucket, not the image's whole grid, and window groups cost about
      the bucket times a window. Ranks of one capacity class run as one
      ``scaled_dot_product_attention`` call with a key mask; one gather
      builds every class's batch and one gather puts the outputs back in
      packed order.

    Args:
        cu_seqlens (Tensor): Group offsets (at least ``num_groups + 1``),
            clamped to ``num_tokens``.
        num_groups (int): Real groups, before the padding groups.
        max_seqlen (int): Bound on every group's length.
        num_tokens (int): Length of the packed sequence (P).
        kernel (str, optional): One of :data:`STATIC_KERNELS`; None: chosen
            from the first call's inputs.
        backend (str): The attention backend the kernel is chosen under
            (:func:`static_kernel`). Defaults to ``'auto'``.
    """

    def __init__(self,
                 cu_seqlens: Tensor,
                 num_groups: int,
                 max_seqlen: int,
                 num_tokens: int,
                 kernel: Optional[str] = None,
                 backend: str = 'auto') -> None:
        if kernel is not None and kernel not in STATIC_KERNELS:
            raise ValueError(f'kernel must be one of {STATIC_KERNELS} or '
                             f'None, got {kernel!r}')
        if min(num_groups, max_seqlen, num_tokens) < 1:
            raise ValueError(
                'a static plan needs at least one group, token and slot; got '
                f'num_groups={num_groups}, max_seqlen={max_seqlen}, '
                f'num_tokens={num_tokens}')
        self.cu_seqlens = cu_seqlens
        self.num_groups = num_groups
        self.max_seqlen = max_seqlen
        self.num_tokens = num_tokens
        self.kernel = kernel
        self.backend = check_backend(backend)
        self.classes = capacity_classes(num_groups, max_seqlen, num_tokens)
        self._tables: Optional[Tuple[Tensor, List[Tensor], Tensor]] = None

    @property
    def padded_rows(self) -> int:
        """Query rows of the ``'static_sdpa'`` calls (real tokens and the
        slots padding them), summed over the capacity classes."""
        return sum(ranks * capacity for ranks, capacity in self.classes)

    def prepare(self) -> 'StaticPlan':
        """Nothing to do ahead: the plan reads nothing from the host."""
        return self

    def _sdpa_tables(self) -> Tuple[Tensor, List[Tensor], Tensor]:
        """(gather, masks, rows): the slots' packed tokens, every class's
        key mask, and every token's row among the classes' outputs."""
        if self._tables is not None:
            return self._tables
        cu = self.cu_seqlens[:self.num_groups + 1].long()
        starts, ends = cu[:-1], cu[1:]
        lengths = ends - starts
        order = torch.argsort(lengths, descending=True, stable=True)
        rank_start, rank_length = starts[order], lengths[order]
        gathers, masks, bases = [], [], []
        rank = row = 0
        for ranks, capacity in self.classes:
            steps = torch.arange(capacity, device=cu.device)
            start = rank_start[rank:rank + ranks, None]
            length = rank_length[rank:rank + ranks, None]
            # Padding slots read the group's last token (any real token
            # does: its key is masked and its query row dropped). An empty
            # group keeps one key, so no softmax row is all -inf (no NaN,
            # even in backward).
            gathers.append(start +
                           torch.minimum(steps, (length - 1).clamp(min=0)))
            masks.append((steps < length.clamp(min=1))[:, None, None, :])
            bases.append(row +
                         capacity * torch.arange(ranks, device=cu.device))
            rank, row = rank + ranks, row + ranks * capacity
        gather = torch.cat([g.reshape(-1)
                            for g in gathers]).clamp_(max=self.num_tokens - 1)
        # First output row of every group (by group id, not rank).
        group_base = torch.empty_like(order).scatter_(0, order,
                                                      torch.cat(bases))
        tokens = torch.arange(self.num_tokens, device=cu.device)
        group = torch.searchsorted(
            ends, tokens, right=True).clamp_(max=self.num_groups - 1)
        # Tokens after the real groups land on some row: dropped later.
        rows = (group_base[group] + tokens - starts[group]).clamp_(0, row - 1)
        self._tables = gather, masks, rows
        return self._tables

    def __call__(self,
                 q: Tensor,
                 k: Tensor,
                 v: Tensor,
                 observers: AttentionObservers = ()) -> Tensor:
        """Attention of packed (N, heads, head_dim) q, k, v -> same shape;
        ``observers`` hear the call (:data:`AttentionObserver`)."""
        num_tokens, heads, head_dim = q.shape
        if num_tokens != self.num_tokens:
            raise ValueError(f'the plan covers {self.num_tokens} tokens, '
                             f'got {num_tokens}')
        if self.kernel is None:
            self.kernel = static_kernel(q.device, q.dtype, self.backend)
        _notify(observers, self.kernel, q, self.cu_seqlens)
        if self.kernel == 'static_varlen':
            return self._run_varlen(q, k, v)
        gather, masks, rows = self._sdpa_tables()
        flat = [t.index_select(0, gather) for t in (q, k, v)]
        outs, row = [], 0
        for (ranks, capacity), mask in zip(self.classes, masks):
            stop = row + ranks * capacity
            q_, k_, v_ = (
                t[row:stop].view(ranks, capacity, heads, -1).transpose(1, 2)
                for t in flat)
            out = F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask)
            outs.append(out.transpose(1, 2).reshape(-1, heads, v.shape[-1]))
            row = stop
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.index_select(0, rows)

    def _run_varlen(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if _torch_varlen_attn is None:
            raise ValueError("StaticPlan kernel 'static_varlen' needs "
                             'torch.nn.attention.varlen (torch >= 2.9)')
        cu = self.cu_seqlens.to(device=q.device, dtype=torch.int32)
        try:
            return _torch_varlen_attn(q, k, v, cu, cu, self.max_seqlen,
                                      self.max_seqlen)
        except RuntimeError as err:
            raise RuntimeError(
                f"static mode's varlen kernel failed ({err}); run static "
                "mode on the SDPA plan with attention_backend(model, 'padded')"
            ) from err


def build_plans(*cu_max: tuple) -> List[VarlenPlan]:
    """Plans for several ``(cu_seqlens, max_seqlen[, offsets])``, sharing
    equal ones (the same tensor, or equal host offsets): without windows the
    window groups are the image groups and one plan serves both. Reads
    nothing from the device when every entry has its host offsets."""
    plans: List[VarlenPlan] = []
    for entry in cu_max:
        cu, max_len = entry[0], entry[1]
        offsets = entry[2] if len(entry) > 2 else None
        for done in plans:
            if offsets is not None and done.offsets is not None:
                same = done.offsets == offsets
            else:  # compared on the device: a host read
                same = done.cu_seqlens is cu or (
                    done.cu_seqlens.shape == cu.shape
                    and bool(torch.equal(done.cu_seqlens, cu)))
            if same:
                plans.append(done)
                break
        else:
            plans.append(VarlenPlan(cu, max_len, offsets))
    return plans


def cuda_varlen_enabled() -> bool:
    """Whether ``'auto'`` tries torch's varlen kernel for CUDA fp16/bf16
    calls (it is importable in this torch build: the one probe of it).
    Whether it then ran is per call: :func:`count_attention_calls` counts
    the calls it refused (``varlen_failed``)."""
    return _torch_varlen_attn is not None
