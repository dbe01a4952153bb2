"""Budget mode: the same number of tokens for every image, detail first.

The quadtree starts from the coarsest grid (one largest patch per cell) and
splits the highest-scoring patch, again and again, until one more split
(3 more tokens: one patch becomes four) would exceed the budget. Splitting
greedily by score on a tree is the same as ranking every splittable patch
by its *path score*, the minimum score over the patch and all its ancestors
(a patch cannot be split before its parent, and a parent scoring lower than
its child holds the child back), and splitting the top ``k``:
``k = (budget - coarsest cells) // 3``, a number known from the shapes
alone. So the selection is one sort per image, vectorised over the batch,
with no host read and no per-token loop (a loop over the few scales).

Ties are broken by a fixed rule: coarser patches first (so a parent always
precedes a child of the same path score), then row-major (top-left first).
The result has ``coarsest cells + 3 k`` content tokens in every image:
at most the budget and within 2 of it (never more than one split short);
a budget at or above the plain grid gives the plain grid.

With ``floor_thresholds`` the thresholds are a floor of detail: every split
that threshold mode would make (score at or above its scale's threshold,
ancestors too) ranks before any other, so whenever the threshold layout fits
in the budget the budget layout contains it and spends the rest by score;
when it does not fit, the budget still wins (static token count) and the
highest-scoring of those splits are made.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor


def min_tokens(grid_size: Tuple[int, int], num_scales: int) -> int:
    """Fewest content tokens a layout can have: one largest patch per cell
    of the coarsest grid."""
    shift = num_scales - 1
    return (grid_size[0] >> shift) * (grid_size[1] >> shift)


def check_token_budget(token_budget) -> int:
    """A positive int (content tokens per image)."""
    if isinstance(
            token_budget,
            bool) or not isinstance(token_budget, int) or token_budget < 1:
        raise ValueError(f'token_budget must be a positive int (content '
                         f'tokens per image), got {token_budget!r}')
    return token_budget


def check_keep_ratio(keep_ratio) -> float:
    """A float in (0, 1]: the fraction of the plain grid's tokens kept."""
    if isinstance(
            keep_ratio,
            bool) or not isinstance(keep_ratio,
                                    (int, float)) or not 0 < keep_ratio <= 1:
        raise ValueError(f'keep_ratio must be in (0, 1] (the fraction of the '
                         f'plain model\'s tokens each image keeps), got '
                         f'{keep_ratio!r}')
    return float(keep_ratio)


def resolve_budget(grid_size: Tuple[int, int],
                   num_scales: int,
                   patch_size: int,
                   token_budget: Optional[int] = None,
                   keep_ratio: Optional[float] = None,
                   num_prefix_tokens: int = 0) -> int:
    """Content tokens per image for this input size.

    ``keep_ratio`` gives ``floor(keep_ratio * cells)`` tokens. Raises a
    ValueError naming the minimum when the budget cannot be met.
    """
    if (token_budget is None) == (keep_ratio is None):
        raise ValueError('give exactly one of token_budget and keep_ratio')
    height, width = grid_size
    cells = height * width
    least = min_tokens(grid_size, num_scales)
    largest = patch_size << (num_scales - 1)
    where = (f'{height * patch_size}x{width * patch_size} inputs '
             f'(one {largest}-px patch per cell of the '
             f'{height >> (num_scales - 1)}x{width >> (num_scales - 1)} '
             f'coarsest grid')
    prefix = (f'; the {num_prefix_tokens} prefix token(s) per image come on '
              f'top, {least + num_prefix_tokens} in all'
              if num_prefix_tokens else '')
    if keep_ratio is not None:
        budget = int(math.floor(check_keep_ratio(keep_ratio) * cells + 1e-9))
        if budget < least:
            raise ValueError(
                f'keep_ratio {keep_ratio} keeps {budget} of {cells} tokens, '
                f'below the minimum of {least} content tokens for {where})'
                f'{prefix}: use keep_ratio >= {least / cells:.4g}')
        return budget
    budget = check_token_budget(token_budget)
    if budget < least:
        raise ValueError(
            f'token_budget {budget} is below the minimum of {least} content '
            f'tokens for {where}){prefix}: use token_budget >= {least} or '
            f'more scales of smaller patches')
    return budget


def _up2(x: Tensor) -> Tensor:
    """Nearest 2x upsampling of (B, h, w)."""
    return x.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


def _path_scores(
    scores: Sequence[Tensor],
    floor_thresholds: Optional[Sequence[float]] = None
) -> Tuple[List[Tensor], Optional[List[Tensor]]]:
    """Per scale, coarsest first: the minimum score over each patch and its
    ancestors; with a floor, the lexicographic minimum of (forced, score),
    forced = the thresholds split it."""
    paths, forced = [], [] if floor_thresholds is not None else None
    parent = parent_forced = None
    for scale in range(len(scores), 0, -1):
        score = scores[scale - 1].float()
        flag = None
        if forced is not None:
            flag = score >= floor_thresholds[scale - 1]
        if parent is not None:
            up = _up2(parent)
            if forced is None:
                score = torch.minimum(up, score)
            else:
                up_flag = _up2(parent_forced)
                # (False, .) < (True, .): a non-forced link bounds the path.
                score = torch.where(up_flag == flag, torch.minimum(up, score),
                                    torch.where(up_flag, score, up))
                flag = up_flag & flag
        paths.append(score)
        if forced is not None:
            forced.append(flag)
        parent, parent_forced = score, flag
    return paths, forced


def budget_patches(
        scores: Sequence[Tensor],
        grid_size: Tuple[int, int],
        token_budget: int,
        floor_thresholds: Optional[Sequence[float]] = None) -> List[Tensor]:
    """Keep masks of ``token_budget`` (or up to 2 fewer) tokens per image.

    Args:
        scores (Sequence[Tensor]): Score maps of scales 1..S-1 (smallest
            patch first), each (B, Hc / 2**i, Wc / 2**i), as for
            :func:`~mmapt.tokenizer.layout.select_patches`.
        grid_size (tuple[int, int]): The base grid (Hc, Wc).
        token_budget (int): Content tokens per image, at least
            :func:`min_tokens`.
        floor_thresholds (Sequence[float], optional): Thresholds whose splits
            come first (a floor of detail); None: score order only.

    Returns:
        list[Tensor]: ``S`` bool masks, one per scale 0..S-1, in the format
        of :func:`~mmapt.tokenizer.layout.select_patches`.
    """
    num_scales = len(scores) + 1
    height, width = grid_size
    for scale, score in enumerate(scores, 1):
        expected = (height >> scale, width >> scale)
        if score.dim() != 3 or tuple(score.shape[1:]) != expected:
            raise ValueError(f'score map of scale {scale} has shape '
                             f'{tuple(score.shape)}, expected (B, '
                             f'{expected[0]}, {expected[1]})')
    if floor_thresholds is not None and len(floor_thresholds) != len(scores):
        raise ValueError(f'{len(scores)} score maps but '
                         f'{len(floor_thresholds)} floor thresholds')
    if num_scales == 1:
        raise ValueError('budget_patches needs at least one scale above base')
    least = min_tokens(grid_size, num_scales)
    if token_budget < least:
        raise ValueError(f'token_budget {token_budget} is below the minimum '
                         f'of {least} tokens for a {height}x{width} grid')
    sizes = [(height >> s) * (width >> s)
             for s in range(num_scales - 1, 0, -1)]
    num_splits = min((token_budget - least) // 3, sum(sizes))

    paths, forced = _path_scores(scores, floor_thresholds)
    batch = paths[0].shape[0]
    # Coarsest scale first, row-major inside a scale: the tie-break order,
    # which stable sorts keep.
    keys = torch.cat([p.reshape(batch, -1) for p in paths], dim=1)
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices
    if forced is not None:
        flags = torch.cat([f.reshape(batch, -1) for f in forced], dim=1)
        flags = flags.to(torch.uint8).gather(1, order)
        order = order.gather(
            1,
            torch.sort(flags, dim=1, descending=True, stable=True).indices)
    chosen = torch.zeros_like(keys, dtype=torch.bool)
    chosen.scatter_(1, order[:, :num_splits], True)

    split = {}
    start = 0
    for scale, size in zip(range(num_scales - 1, 0, -1), sizes):
        split[scale] = chosen[:,
                              start:start + size].view(batch, height >> scale,
                                                       width >> scale)
        start += size
    keep = [None] * num_scales
    top = num_scales - 1
    keep[top] = ~split[top]
    for scale in range(top - 1, 0, -1):
        keep[scale] = _up2(split[scale + 1]) & ~split[scale]
    keep[0] = _up2(split[1])
    return keep
