"""Drift targets at budget mode's operating point (``merge_pattern='budget'``).

The checkerboard targets of :class:`ScorerDistiller` measure every patch's
drift among base-resolution neighbours, while budget mode at ``keep_ratio``
0.5 or 0.7 merges about half the image and only decides the *marginal*
patches: the ones it merged last and the ones it split last. These targets
are measured there, on the layouts budget mode actually produces:

1. the budget layout of the batch at ``keep_ratio`` from the scorer being
   trained (its current scores: the frontier moves with the scorer, and an
   untrained contrast-prior network gives contrast's layout);
2. the *merged frontier* of size ``s``: the patches of size ``s`` that are
   tokens of that layout; their target is their drift in it (one forward);
3. the *split frontier* of size ``s``: the patches that were split into
   four tokens of the next size down (the last splits; un-splitting one
   gives back three tokens); their target is their drift with that split
   undone, in a checkerboard of them over the budget layout (two forwards),
   so each un-split patch keeps the layout's other tokens around it.

Only frontier patches get a target (the others are not decided at this
budget and get no loss); the drift is the same relative RMS feature drift
per patch as the checkerboard's, so the scorer stays in drift units.
"""
from typing import Callable, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmapt.tokenizer import budget_patches, resolve_budget


def _up2(mask: Tensor) -> Tensor:
    """Nearest 2x upsampling of a (B, h, w) mask."""
    return mask.repeat_interleave(2, 1).repeat_interleave(2, 2)


def last_splits(masks: Sequence[Tensor]) -> List[Tensor]:
    """Per scale 1..S-1, (B, H / s, W / s) bool: the patches split into four
    tokens of the scale below (the split frontier)."""
    return [
        F.max_pool2d((~masks[s - 1]).float()[:, None], 2)[:, 0] == 0
        for s in range(1, len(masks))
    ]


def unsplit(masks: Sequence[Tensor],
            patches: Sequence[Tensor]) -> List[Tensor]:
    """Keep masks with ``patches`` (per scale 1..S-1, a subset of
    :func:`last_splits`) merged back into one token each. Frontier patches
    of different scales never overlap, so the order does not matter."""
    out = list(masks)
    for scale, chosen in enumerate(patches, 1):
        out[scale] = out[scale] | chosen
        out[scale - 1] = out[scale - 1] & ~_up2(chosen)
    return out


def pooled_drift(cell_drift: Tensor, scale: int) -> Tensor:
    """(B, h, w) squared cell drift -> RMS drift of each patch of ``scale``."""
    return F.avg_pool2d(cell_drift[:, None], 1 << scale)[:, 0].sqrt()


def checkerboard(rows: int, cols: int, parity: int,
                 device: torch.device) -> Tensor:
    """(rows, cols) bool: True where (row + col) % 2 == parity."""
    index = torch.arange(rows, device=device)[:, None] + \
        torch.arange(cols, device=device)
    return index % 2 == parity


@torch.no_grad()
def budget_frontier_targets(
    tokenizer, scores: Sequence[Tensor], grid: Tuple[int, int],
    keep_ratio: float, layout_drift: Callable[[List[Tensor]], Tensor]
) -> Tuple[List[Tensor], List[Tensor]]:
    """Frontier drift targets of one keep ratio (module docstring).

    Args:
        tokenizer: The frozen backbone's ``PatchTokenizer``.
        scores (Sequence[Tensor]): The scorer's maps of scales 1..S-1 (any
            monotone transform of them gives the same layout).
        grid (tuple[int, int]): The base grid of the batch.
        keep_ratio (float): The budget mode operating point.
        layout_drift (callable): Keep masks -> (B, H / cell, W / cell)
            squared relative drift per base cell of that layout's forward
            (task weight applied).

    Returns:
        tuple[list[Tensor], list[Tensor]]: Per scale 1..S-1, the RMS drift
        targets and the bool masks of the patches that have one.
    """
    budget = resolve_budget(
        grid,
        tokenizer.num_scales,
        tokenizer.patch_size,
        keep_ratio=keep_ratio,
        num_prefix_tokens=tokenizer.num_prefix_tokens)
    masks = budget_patches([s.detach() for s in scores], grid, budget)
    drift = layout_drift(masks)
    targets = [pooled_drift(drift, s) * masks[s] for s in range(1, len(masks))]
    frontier = last_splits(masks)
    for parity in (0, 1):
        chosen = [
            f & checkerboard(*f.shape[-2:], parity, f.device) for f in frontier
        ]
        drift = layout_drift(unsplit(masks, chosen))
        targets = [
            torch.where(c, pooled_drift(drift, s), t)
            for s, (c, t) in enumerate(zip(chosen, targets), 1)
        ]
    has_target = [m | f for m, f in zip(masks[1:], frontier)]
    return targets, has_target
