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
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .layout import _upsample2


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
    """Nearest 2x upsampling of (B, h, w): one cached-index gather."""
    return _upsample2(x)


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
    return split_patches(scores, grid_size, num_splits, floor_thresholds)


def split_patches(
        scores: Sequence[Tensor],
        grid_size: Tuple[int, int],
        num_splits: Union[int, Tensor],
        floor_thresholds: Optional[Sequence[float]] = None) -> List[Tensor]:
    """Keep masks after the ``num_splits`` highest-ranked splits of every
    image (see the module docstring for the rank).

    Args:
        scores (Sequence[Tensor]): As for :func:`budget_patches` (checked
            there).
        grid_size (tuple[int, int]): The base grid (Hc, Wc).
        num_splits (int | Tensor): Splits per image: one int for all, or a
            (B,) long tensor on the scores' device (no host read).
        floor_thresholds (Sequence[float], optional): As for
            :func:`budget_patches`.

    Returns:
        list[Tensor]: ``S`` bool masks, one per scale 0..S-1.
    """
    order, _ = _rank_splits(scores, floor_thresholds)
    return _keep_masks(_choose(order, num_splits), grid_size, len(scores) + 1)


def _rank_splits(
    scores: Sequence[Tensor], floor_thresholds: Optional[Sequence[float]]
) -> Tuple[Tensor, Optional[Tensor]]:
    """(B, P) every image's splittable patches (coarsest scale first,
    row-major) in rank order; with a floor, also (B, P) its "the thresholds
    split it" flags in the same order."""
    paths, forced = _path_scores(scores, floor_thresholds)
    batch = paths[0].shape[0]
    # Coarsest scale first, row-major inside a scale: the tie-break order,
    # which stable sorts keep.
    keys = torch.cat([p.reshape(batch, -1) for p in paths], dim=1)
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices
    if forced is None:
        return order, None
    flags = torch.cat([f.reshape(batch, -1) for f in forced], dim=1)
    flags = flags.to(torch.uint8).gather(1, order)
    ranked = torch.sort(flags, dim=1, descending=True, stable=True)
    return order.gather(1, ranked.indices), ranked.values


def _choose(order: Tensor, num_splits: Union[int, Tensor]) -> Tensor:
    """(B, P) bool: the first ``num_splits`` of ``order`` per image."""
    chosen = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    if isinstance(num_splits, Tensor):
        ranks = torch.arange(order.shape[1], device=order.device)
        return chosen.scatter_(1, order, ranks[None, :] < num_splits[:, None])
    return chosen.scatter_(1, order[:, :num_splits], True)


def _keep_masks(chosen: Tensor, grid_size: Tuple[int, int],
                num_scales: int) -> List[Tensor]:
    """Split flags (B, P), coarsest scale first -> ``S`` keep masks."""
    height, width = grid_size
    batch = chosen.shape[0]
    split = {}
    start = 0
    for scale in range(num_scales - 1, 0, -1):
        size = (height >> scale) * (width >> scale)
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


def capped_splits(splits: Tensor, total_splits: int) -> Tensor:
    """Splits per image after capping the batch to ``total_splits``.

    Water filling: every image keeps ``min(splits, level)`` with the
    highest ``level`` the total allows, and the splits left over go one
    each to the first images held at the level; images under the level
    keep all theirs. Device ops only: ``sum(min(s_i, L))`` is the minimum
    over ``j`` of (the ``j`` smallest ``s_i``) + ``(B - j) L``, so the level
    is the largest ``floor((total - those j) / (B - j))``.

    Args:
        splits (Tensor): (B,) long, the splits each image wants.
        total_splits (int): Splits the batch may make (>= 0).

    Returns:
        Tensor: (B,) long, at most ``splits`` each and ``total_splits`` in
        all when ``splits`` asks for more (else ``splits``).
    """
    batch = splits.shape[0]
    ascending = splits.sort().values
    before = ascending.cumsum(0) - ascending  # sum of the j smallest
    rest = torch.arange(batch, 0, -1, device=splits.device)
    level = torch.div(total_splits - before, rest, rounding_mode='floor').max()
    kept = torch.minimum(splits, level)
    held = splits > level
    left = total_splits - kept.sum()
    extra = held & (held.cumsum(0) <= left)
    capped = kept + extra.long()
    return torch.where(splits.sum() > total_splits, capped, splits)


def fit_patches(
        scores: Sequence[Tensor],
        grid_size: Tuple[int, int],
        content_tokens: int,
        floor_thresholds: Optional[Sequence[float]] = None,
        num_splits: Optional[int] = None) -> Tuple[List[Tensor], Tensor]:
    """The layout of a batch capped at ``content_tokens`` tokens in all,
    device-side: the static-shape mode's rule for a batch larger than its
    bucket.

    The wanted layout is threshold mode's (``floor_thresholds`` given,
    ``num_splits`` None: the splits the thresholds make) or budget mode's
    (``num_splits`` per image, the thresholds as a floor or None). When the
    batch wants more splits than ``content_tokens`` allow, each image gets
    at most its share (:func:`capped_splits`: images under the share keep
    their whole layout, the others make their highest-ranked splits
    first, threshold splits before any other); otherwise every image gets
    exactly the wanted layout. A threshold layout is the first ``k`` splits
    of the rank (its splits rank first), so one ranking serves both cases
    and nothing is read back to the host.

    Args:
        scores (Sequence[Tensor]): Score maps of scales 1..S-1, as for
            :func:`budget_patches`.
        grid_size (tuple[int, int]): The base grid (Hc, Wc).
        content_tokens (int): Content tokens the batch may have, at least
            ``B * min_tokens`` (prefix tokens not counted).
        floor_thresholds (Sequence[float], optional): The thresholds whose
            splits rank first. Required without ``num_splits``.
        num_splits (int, optional): Budget mode: splits every image wants.

    Returns:
        tuple[list[Tensor], Tensor]: The ``S`` keep masks, and a 0-dim bool
        that is True when the batch was capped.
    """
    num_scales = len(scores) + 1
    batch = scores[0].shape[0]
    least = min_tokens(grid_size, num_scales)
    if content_tokens < batch * least:
        raise ValueError(f'{content_tokens} content tokens cannot hold a '
                         f'batch of {batch} (at least {batch * least})')
    if num_splits is None and floor_thresholds is None:
        raise ValueError('fit_patches needs floor_thresholds (threshold '
                         'mode) or num_splits (budget mode)')
    order, flags = _rank_splits(scores, floor_thresholds)
    if num_splits is None:
        wanted = flags.sum(1)
    else:
        wanted = torch.full((batch, ),
                            num_splits,
                            dtype=torch.long,
                            device=order.device)
    # A split turns one patch into four: 3 tokens more.
    total_splits = (content_tokens - batch * least) // 3
    masks = _keep_masks(
        _choose(order, capped_splits(wanted, total_splits)), grid_size,
        num_scales)
    return masks, wanted.sum() > total_splits
