# Copyright (c) mmapt contributors. All rights reserved.
"""An explicit channel for the token counts of every backbone call.

A backbone used to overwrite a ``token_stats`` attribute on each forward, and
a hook read whatever the last call left there: slide inference (one call per
crop) then reported only the last crop. Instead, a backbone announces the
counts of every call to registered observers, and each observer decides how
to combine them (``TokenStatsHook`` sums the calls of an iteration per
image). Stage marks and attention calls are observed the same way
(:mod:`mmapt.models.observers`).
"""
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from mmapt.models.observers import add_observer

#: ``fn(tokens, baseline_tokens)``; both int64, shape (B,), one entry per
#: image of the backbone call. Registered with ``capped=True``:
#: ``fn(tokens, baseline_tokens, capped)``, ``capped`` a 0-dim bool tensor.
TokenObserver = Callable[..., None]


class TokenObservable:
    """Mixin for backbones that report their token counts per call.

    A backbone calls :meth:`notify_tokens` exactly once per forward with
    the number of tokens each image ran through the blocks and the number a
    plain ViT would have run (the base grid cells); prefix tokens (class,
    registers) are counted in neither. Plain backbones pass the grid cells
    for both.

    Example:
        >>> calls = []
        >>> handle = backbone.register_token_observer(
        ...     lambda tokens, baseline: calls.append((tokens, baseline)))
        >>> backbone(images)            # calls == [(tensor([..]), ...)]
        >>> handle.remove()
    """

    def register_token_observer(self,
                                fn: TokenObserver,
                                capped: bool = False) -> RemovableHandle:
        """Call ``fn(tokens, baseline_tokens)`` after every forward.

        Args:
            fn (Callable): Receives two int64 tensors of shape (B,) on the
                device of the input: tokens per image and baseline tokens
                per image (without prefix tokens).
            capped (bool): Also pass a third argument, a 0-dim bool tensor on
                the device: True when the static-shape mode capped this
                call's tokens to its pack size (the tokens are then fewer
                than the thresholds asked for). Defaults to False.

        Returns:
            torch.utils.hooks.RemovableHandle: ``handle.remove()``
            unregisters ``fn``.
        """
        if not callable(fn):
            raise TypeError(f'token observer must be callable, got {fn!r}')
        return add_observer(self, '_token_observers', (fn, bool(capped)))

    def notify_tokens(self,
                      tokens: Tensor,
                      baseline_tokens: Tensor,
                      capped: Optional[Tensor] = None) -> None:
        """Hand this call's per-image counts to every observer.

        Args:
            tokens (Tensor): int64 (B,), tokens per image (no prefix tokens).
            baseline_tokens (Tensor): int64 (B,), grid cells per image.
            capped (Tensor, optional): 0-dim bool, whether the static-shape
                mode capped this call; None: it could not (False to the
                observers that ask).
        """
        sink = self.__dict__.get('_token_sink')
        if sink is not None:  # see collect_token_reports
            sink.append((tokens, baseline_tokens, capped))
            return
        observers = self.__dict__.get('_token_observers')
        if not observers:
            return
        if tokens.shape != baseline_tokens.shape or tokens.dim() != 1:
            raise ValueError(
                'token counts must be two (B,) tensors, got shapes '
                f'{tuple(tokens.shape)} and {tuple(baseline_tokens.shape)}')
        # Counts are bookkeeping, never part of the graph.
        tokens = tokens.detach().to(torch.int64)
        baseline_tokens = baseline_tokens.detach().to(torch.int64)
        if capped is None:
            capped = torch.zeros((), dtype=torch.bool, device=tokens.device)
        capped = capped.detach()
        for fn, with_capped in list(observers.values()):
            if with_capped:
                fn(tokens, baseline_tokens, capped)
            else:
                fn(tokens, baseline_tokens)

    @contextmanager
    def collect_token_reports(self) -> Iterator[List[tuple]]:
        """Inside the ``with`` block :meth:`notify_tokens` only appends its
        ``(tokens, baseline_tokens, capped)`` to the yielded list, calling no
        observer: a compiled or captured forward reports its counts as
        tensors it returns, and the caller hands them to the observers
        (:meth:`notify_tokens`) after each call."""
        saved = self.__dict__.get('_token_sink')
        reports: List[tuple] = []
        object.__setattr__(self, '_token_sink', reports)
        try:
            yield reports
        finally:
            object.__setattr__(self, '_token_sink', saved)


def is_token_observable(module: object) -> bool:
    """Whether ``module`` reports token counts (has the observer API)."""
    return callable(getattr(module, 'register_token_observer', None))


class TokenCounter:
    """A token observer that sums the calls it saw, per image.

    Calls over the same images (slide-inference crops of one batch) are
    summed image by image; calls with different batch sizes are taken as
    different images and concatenated. Register it with ``capped=True``
    (as :func:`count_tokens` does) to count the capped calls too.
    """

    def __init__(self) -> None:
        self.calls: List[Tuple[Tensor, Tensor]] = []
        self.capped: List[Tensor] = []

    def __call__(self,
                 tokens: Tensor,
                 baseline_tokens: Tensor,
                 capped: Optional[Tensor] = None) -> None:
        self.calls.append((tokens, baseline_tokens))
        if capped is not None:
            self.capped.append(capped)

    def reset(self) -> None:
        self.calls = []
        self.capped = []

    def per_image(self) -> Optional[Dict[str, Tensor]]:
        """Per image (float64, CPU): ``tokens`` and ``baseline_tokens``
        summed over the calls, ``keep_ratio`` = their ratio; ``calls``
        the number of calls and ``capped`` how many of them the
        static-shape mode capped (0-dim). None before the first call."""
        if not self.calls:
            return None
        tokens = [t.cpu() for t, _ in self.calls]
        baseline = [b.cpu() for _, b in self.calls]
        if len({t.numel() for t in tokens}) == 1:
            tokens = torch.stack(tokens).sum(0)
            baseline = torch.stack(baseline).sum(0)
        else:
            tokens, baseline = torch.cat(tokens), torch.cat(baseline)
        tokens, baseline = tokens.double(), baseline.double()
        return dict(
            tokens=tokens,
            baseline_tokens=baseline,
            keep_ratio=tokens / baseline.clamp(min=1),
            calls=torch.tensor(float(len(self.calls))),
            capped=torch.tensor(float(sum(bool(c) for c in self.capped))))


@contextmanager
def count_tokens(backbone: TokenObservable) -> Iterator[TokenCounter]:
    """Count the tokens of every ``backbone`` call inside the block.

    Example:
        >>> with count_tokens(model.backbone) as counter:
        ...     model.test_step(data)
        >>> counter.per_image()['keep_ratio']
    """
    if not is_token_observable(backbone):
        raise TypeError(f'{type(backbone).__name__} does not report token '
                        'counts (no register_token_observer); use an mmapt '
                        'backbone such as EVA02 or APTEVA02')
    counter = TokenCounter()
    handle = backbone.register_token_observer(counter, capped=True)
    try:
        yield counter
    finally:
        handle.remove()
