"""PatchLayout: where every packed token sits, and how to go to and from
the dense base grid.

The layout is computed once per forward (no gradients) and shared by the
embedding, every attention block and the unpacking at the outputs.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _cu_seqlens(counts: Tensor) -> Tensor:
    """Group sizes -> int32 offsets ``[0, n0, n0 + n1, ...]``."""
    offsets = counts.new_zeros(counts.numel() + 1)
    torch.cumsum(counts, 0, out=offsets[1:])
    return offsets.to(torch.int32)


@dataclass
class PatchLayout:
    """The multi-scale token layout of a batch, in packed order.

    Tokens are ordered by image, then by window (row-major), then by the
    row-major position of their top-left cell inside the window, so the tokens
    of one image and those of one window are contiguous slices of the packed
    sequence. Without windows, each image is one group.

    Prefix tokens (class / register tokens, ``num_prefix_tokens`` per image)
    open every image's slice: the packed sequence is ``[prefix 0, content 0,
    prefix 1, content 1, ...]``. Image groups include them; window groups
    give each image's prefix tokens a group of their own, placed before that
    image's windows. The per-token attributes below describe the *content*
    tokens only (``num_tokens`` of them); ``content_index`` says where each
    sits in the packed sequence of ``num_packed`` tokens.

    Attributes:
        batch_size (int): Number of images.
        grid_size (tuple[int, int]): Base grid (Hc, Wc) in cells.
        num_scales (int): Number of patch scales; scale ``i`` covers
            ``2**i x 2**i`` cells.
        window_size (int, optional): Window side in cells; None = no windows.
        image_index, scale_index, row, col, side, window_index (Tensor): Per
            token (N,) long tensors; ``row``/``col`` are the top-left cell and
            ``window_index`` the global window group id.
        cu_seqlens_image (Tensor): (B + 1,) int32 offsets of the images
            in the packed sequence (prefix tokens included).
        max_seqlen_image (int): Longest image sequence.
        cu_seqlens_window (Tensor): (G + 1,) int32 offsets of the windows
            (and of each image's prefix group when there are prefix tokens).
        max_seqlen_window (int): Longest window sequence.
        cell_to_token (Tensor): (B, Hc, Wc) packed index of the token
            covering each cell.
        tokens_per_image (Tensor): (B,) long content tokens per image (prefix
            tokens not counted).
        num_prefix_tokens (int): Prefix tokens per image. Defaults to 0.
        content_index (Tensor): (N,) packed position of each content token.
        prefix_index (Tensor): (B * P,) packed positions of the prefix
            tokens, image-major (empty without prefix tokens).
        packed_image_index (Tensor): (N + B * P,) image of every packed token.
    """

    batch_size: int
    grid_size: Tuple[int, int]
    num_scales: int
    window_size: Optional[int]
    image_index: Tensor
    scale_index: Tensor
    row: Tensor
    col: Tensor
    side: Tensor
    window_index: Tensor
    cu_seqlens_image: Tensor
    max_seqlen_image: int
    cu_seqlens_window: Tensor
    max_seqlen_window: int
    cell_to_token: Tensor
    tokens_per_image: Tensor
    num_prefix_tokens: int
    content_index: Tensor
    prefix_index: Tensor
    packed_image_index: Tensor

    @property
    def num_tokens(self) -> int:
        """Content tokens of the batch (prefix tokens not counted)."""
        return int(self.image_index.numel())

    @property
    def num_packed(self) -> int:
        """Length of the packed sequence: content plus prefix tokens."""
        return self.num_tokens + self.batch_size * self.num_prefix_tokens

    @property
    def baseline_tokens(self) -> int:
        """Tokens per image of the plain model (every cell a token)."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def keep_ratio(self) -> Tensor:
        """(B,) fraction of the plain model's tokens that each image keeps."""
        return self.tokens_per_image.float() / self.baseline_tokens

    @property
    def all_base(self) -> bool:
        """True when no patch was merged (the plain model's tokens)."""
        return self.num_tokens == self.batch_size * self.baseline_tokens

    def centers(self) -> Tensor:
        """(N, 2) float (row, col) token centres in cell units."""
        half = (self.side.float() - 1) / 2
        return torch.stack([self.row.float() + half,
                            self.col.float() + half],
                           dim=1)

    def window_origin(self) -> Tensor:
        """(N, 2) long top-left cell of each token's window (0 without)."""
        if self.window_size is None:
            return torch.zeros(
                self.num_tokens, 2, dtype=torch.long, device=self.row.device)
        ws = self.window_size
        return torch.stack([self.row // ws * ws, self.col // ws * ws], dim=1)

    def unpack(self, tokens: Tensor) -> Tensor:
        """Packed tokens (``num_packed``, C) -> dense map (B, C, Hc, Wc).

        Each token is repeated over all the cells it covers; prefix tokens
        cover no cell and are left out.
        """
        self._check_tokens(tokens)
        height, width = self.grid_size
        dense = tokens.index_select(0, self.cell_to_token.reshape(-1))
        return dense.view(self.batch_size, height, width,
                          -1).permute(0, 3, 1, 2)

    def pool(self, dense: Tensor) -> Tensor:
        """Dense map (B or 1, C, Hc, Wc) -> content tokens (N, C).

        Each token takes the mean of the cells it covers: the map is average
        pooled once per scale and every token reads its patch's value. A map
        with batch 1 (e.g. a position table) is shared by every image.
        """
        height, width = self.grid_size
        if dense.dim() != 4 or tuple(dense.shape[2:]) != (height, width):
            raise ValueError(f'expected a (B, C, {height}, {width}) map, got '
                             f'{tuple(dense.shape)}')
        if dense.shape[0] not in (1, self.batch_size):
            raise ValueError(f'batch of {dense.shape[0]} maps does not match '
                             f'the layout batch {self.batch_size}')
        shared = dense.shape[0] == 1
        out = dense.new_empty(self.num_tokens, dense.shape[1])
        for scale in range(self.num_scales):
            index = (self.scale_index == scale).nonzero(as_tuple=True)[0]
            if index.numel() == 0:
                continue
            factor = 1 << scale
            pooled = dense if scale == 0 else F.avg_pool2d(
                dense, factor, factor)
            rows_s, cols_s = height >> scale, width >> scale
            images = 0 if shared else self.image_index[index]
            row_in_scale = self.row[index] >> scale
            col_in_scale = self.col[index] >> scale
            flat_index = (images * rows_s + row_in_scale) * cols_s \
                + col_in_scale
            flat = pooled.permute(0, 2, 3, 1).reshape(-1, dense.shape[1])
            out = out.index_copy(0, index, flat.index_select(0, flat_index))
        return out

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 2 or tokens.shape[0] != self.num_packed:
            raise ValueError(
                f'expected packed tokens of shape '
                f'({self.num_packed}, C), got {tuple(tokens.shape)}')


def select_patches(entropies: Sequence[Tensor], thresholds: Sequence[float],
                   grid_size: Tuple[int, int]) -> List[Tensor]:
    """Coarse-to-fine quadtree selection of patch scales.

    At the coarsest scale every patch with entropy below its threshold is
    kept; one scale finer, every patch below its threshold that no kept
    coarser patch covers; the cells left at the end are base-size tokens.

    Args:
        entropies (Sequence[Tensor]): Entropy maps of scales 1..S-1, each of
            shape (B, Hc / 2**i, Wc / 2**i).
        thresholds (Sequence[float]): One per entry of ``entropies``.
        grid_size (tuple[int, int]): The base grid (Hc, Wc).

    Returns:
        list[Tensor]: ``S`` bool masks, one per scale 0..S-1, True where a
        patch of that scale is a token. Together they tile the grid once.
    """
    if len(entropies) != len(thresholds):
        raise ValueError(f'{len(entropies)} entropy maps but '
                         f'{len(thresholds)} thresholds')
    num_scales = len(entropies) + 1
    keep: List[Optional[Tensor]] = [None] * num_scales
    covered: Optional[Tensor] = None  # cells of scale i already taken
    for scale in range(num_scales - 1, 0, -1):
        ent = entropies[scale - 1]
        expected = (grid_size[0] >> scale, grid_size[1] >> scale)
        if tuple(ent.shape[1:]) != expected:
            raise ValueError(f'entropy map of scale {scale} has shape '
                             f'{tuple(ent.shape[1:])}, expected {expected}')
        if covered is not None:
            covered = _upsample2(covered)
        selected = ent < thresholds[scale - 1]
        if covered is not None:
            selected &= ~covered
            covered = covered | selected
        else:
            covered = selected
        keep[scale] = selected
    if covered is None:  # single scale: every cell is a base token
        raise ValueError('select_patches needs at least one scale above base')
    keep[0] = ~_upsample2(covered)
    return keep  # type: ignore[return-value]


def _upsample2(mask: Tensor) -> Tensor:
    """Nearest 2x upsampling of a (B, h, w) mask."""
    return mask.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)


def build_layout(keep_masks: Sequence[Tensor],
                 grid_size: Tuple[int, int],
                 window_size: Optional[int] = None,
                 num_prefix_tokens: int = 0) -> PatchLayout:
    """Pack the selected patches of every scale into one ordered sequence.

    Args:
        keep_masks (Sequence[Tensor]): Per scale ``i``, a (B, Hc / 2**i,
            Wc / 2**i) bool mask of the patches that are tokens.
        grid_size (tuple[int, int]): The base grid (Hc, Wc).
        window_size (int, optional): Window side in cells, a multiple of
            the largest patch side in cells; windows at the bottom/right
            border may be partial.
        num_prefix_tokens (int): Class / register tokens opening each image's
            slice of the packed sequence. Defaults to 0.

    Returns:
        PatchLayout: The packed layout.
    """
    height, width = grid_size
    batch = keep_masks[0].shape[0]
    if num_prefix_tokens < 0:
        raise ValueError(f'num_prefix_tokens must be >= 0, got '
                         f'{num_prefix_tokens}')
    if window_size is not None:
        # Windows at the bottom/right border may be partial (padding-free
        # inputs): their groups are simply shorter.
        win_rows = -(-height // window_size)
        win_cols = -(-width // window_size)
    else:
        win_rows = win_cols = 1

    images, scales, rows, cols = [], [], [], []
    for scale, mask in enumerate(keep_masks):
        b, r, c = mask.nonzero(as_tuple=True)
        images.append(b)
        scales.append(torch.full_like(b, scale))
        rows.append(r << scale)
        cols.append(c << scale)
    image_index = torch.cat(images)
    scale_index = torch.cat(scales)
    row = torch.cat(rows)
    col = torch.cat(cols)

    # Sort key: (image, window, row-major top-left inside the window). Every
    # token has its own top-left cell, so keys are unique.
    if window_size is not None:
        window = (row // window_size) * win_cols + col // window_size
        local = (row % window_size) * window_size + col % window_size
        cells_per_group = window_size * window_size
    else:
        window = torch.zeros_like(row)
        local = row * width + col
        cells_per_group = height * width
    window_index = image_index * (win_rows * win_cols) + window
    order = torch.argsort(window_index * cells_per_group + local)
    image_index, scale_index = image_index[order], scale_index[order]
    row, col, window_index = row[order], col[order], window_index[order]
    side = 1 << scale_index

    tokens_per_image = torch.bincount(image_index, minlength=batch)
    tokens_per_window = torch.bincount(
        window_index, minlength=batch * win_rows * win_cols)

    cell_to_token = _cell_to_token(keep_masks, order, grid_size)
    prefix = _prefix_positions(image_index, tokens_per_image,
                               tokens_per_window, num_prefix_tokens)
    if num_prefix_tokens:
        cell_to_token = prefix['content_index'][cell_to_token]
        # Without windows the window groups are the image groups.
        tokens_per_window = tokens_per_image + num_prefix_tokens \
            if window_size is None else prefix['tokens_per_window']
    return PatchLayout(
        batch_size=batch,
        grid_size=(height, width),
        num_scales=len(keep_masks),
        window_size=window_size,
        image_index=image_index,
        scale_index=scale_index,
        row=row,
        col=col,
        side=side,
        window_index=window_index,
        cu_seqlens_image=_cu_seqlens(tokens_per_image + num_prefix_tokens),
        max_seqlen_image=int(tokens_per_image.max()) + num_prefix_tokens,
        cu_seqlens_window=_cu_seqlens(tokens_per_window),
        max_seqlen_window=int(tokens_per_window.max()),
        cell_to_token=cell_to_token,
        tokens_per_image=tokens_per_image,
        num_prefix_tokens=num_prefix_tokens,
        content_index=prefix['content_index'],
        prefix_index=prefix['prefix_index'],
        packed_image_index=prefix['packed_image_index'],
    )


def _prefix_positions(image_index: Tensor, tokens_per_image: Tensor,
                      tokens_per_window: Tensor,
                      num_prefix: int) -> Dict[str, Tensor]:
    """Where content and prefix tokens sit once each image's slice starts
    with ``num_prefix`` prefix tokens, and the window groups with a prefix
    group per image (without prefix tokens: the content order as is)."""
    device = image_index.device
    if not num_prefix:
        return dict(
            content_index=torch.arange(image_index.numel(), device=device),
            prefix_index=image_index.new_empty(0),
            packed_image_index=image_index)
    batch = tokens_per_image.numel()
    # Image b's content is preceded by the (b + 1) * P prefix tokens of
    # images 0..b.
    content_index = torch.arange(image_index.numel(), device=device) + \
        (image_index + 1) * num_prefix
    starts = _cu_seqlens(tokens_per_image + num_prefix)[:-1].long()
    prefix_index = (starts[:, None] +
                    torch.arange(num_prefix, device=device)).reshape(-1)
    images = torch.arange(batch, device=device)
    packed_image_index = torch.repeat_interleave(images,
                                                 tokens_per_image + num_prefix)
    windows = tokens_per_window.view(batch, -1)
    tokens_per_window = torch.cat(
        [windows.new_full((batch, 1), num_prefix), windows], 1).reshape(-1)
    return dict(
        content_index=content_index,
        prefix_index=prefix_index,
        packed_image_index=packed_image_index,
        tokens_per_window=tokens_per_window)


def _cell_to_token(keep_masks: Sequence[Tensor], order: Tensor,
                   grid_size: Tuple[int, int]) -> Tensor:
    """(B, Hc, Wc) packed index of the token that covers each cell."""
    # Position of each unsorted token in the packed (sorted) sequence.
    packed_position = torch.empty_like(order)
    packed_position[order] = torch.arange(order.numel(), device=order.device)
    batch = keep_masks[0].shape[0]
    cell_to_token = torch.zeros(
        batch, *grid_size, dtype=torch.long, device=order.device)
    start = 0
    for scale, mask in enumerate(keep_masks):
        count = int(mask.sum())
        # Token ids at the scale's own grid, then repeated over the cells.
        ids = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
        ids[mask] = packed_position[start:start + count] + 1
        start += count
        factor = 1 << scale
        ids = ids.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
        cell_to_token += ids
    # Every cell got exactly one id + 1 (the masks tile the grid).
    return cell_to_token - 1
