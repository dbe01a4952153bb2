"""PatchLayout: where every packed token sits, and how to go to and from
the dense base grid.

The layout is computed once per forward (no gradients) and shared by the
embedding, every attention block and the unpacking at the outputs. It is
built with device-side ops only: the packed order of the cells is fixed by
the grid and the windows, so a cumulative sum over "is a token" flags in that
order numbers the tokens, and ``nonzero_static`` lists them. The one value
the host needs is the number of tokens (the length of the packed sequence);
it is read once per forward together with the group offsets, or not at all
when ``pack_size`` fixes the length (static-shape mode).
"""
import math
from dataclasses import dataclass
from functools import cached_property
from typing import (Callable, Dict, List, Optional, Sequence, Tuple, TypeVar,
                    Union)

import torch
from torch import Tensor

from mmapt.tokenizer.cache_pins import BoundedCache

T = TypeVar('T')

#: What ``pack_size`` may be set to: None (exact packing), one fixed size,
#: token buckets (sizes, ascending) or ``'auto'`` (buckets from the canvas).
PackSizeSpec = Union[None, int, Tuple[int, ...], str]

#: Fractions of the canvas's base tokens the ``'auto'`` buckets hold.
AUTO_BUCKET_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
#: The ``'auto'`` buckets below 100% are rounded up to a multiple of this
#: many packed tokens (aligned lengths suit the GPU kernels).
AUTO_BUCKET_MULTIPLE = 64


def _content_table(key: str, doc: str) -> property:
    """A read-only :class:`PatchLayout` attribute: one of its per-content-token
    tables (``_content_tables``, computed on first use)."""
    return property(lambda layout: layout._content_tables[key], doc=doc)


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
    image's windows.

    With ``pack_size`` (static-shape mode) the packed sequence always has
    ``pack_size`` tokens: the real ones first, then padding tokens that form
    groups of their own (at the end of ``cu_seqlens_*``, at most 128 tokens
    each, a number fixed by ``pack_size``) and cover no cell.
    Every tensor then has a shape fixed by the batch size, grid and
    ``pack_size``, and nothing is read back to the host.

    The per-token attributes (``image_index``, ``row``, ...) describe the
    content tokens only and are computed on first use (they read the token
    count on the host; the forward never needs them).

    Attributes:
        batch_size (int): Number of images.
        grid_size (tuple[int, int]): Base grid (Hc, Wc) in cells.
        num_scales (int): Number of patch scales; scale ``i`` covers
            ``2**i x 2**i`` cells.
        window_size (int): Window side in cells; 0 = no windows (the
            hosts' and ViTDet's spelling, passed through unchanged).
        num_prefix_tokens (int): Prefix tokens per image.
        pack_size (int, optional): Fixed packed length; None = exact packing.
        num_packed (int): Length of the packed sequence (``pack_size`` in
            static mode).
        cu_seqlens_image (Tensor): int32 offsets of the images in the packed
            sequence (prefix tokens included; then the padding groups).
        max_seqlen_image (int): Longest image group (an upper bound, the
            grid's cells + prefix, in static mode).
        cu_seqlens_window (Tensor): int32 offsets of the windows (and of each
            image's prefix group when there are prefix tokens; then the
            padding groups). The image offsets when there are no windows.
        max_seqlen_window (int): Longest window group (a bound in static
            mode: the window's cells, or the prefix tokens if more).
        num_real_groups_image, num_real_groups_window (int): Groups before
            the padding groups.
        host_cu_seqlens_image, host_cu_seqlens_window (list[int], optional):
            The offsets on the host (exact mode; None in static mode).
        host_scale_counts (list[int], optional): Content tokens per scale, on
            the host (exact mode).
        cell_to_token (Tensor): (B, Hc, Wc) packed index of the token
            covering each cell.
        tokens_per_image (Tensor): (B,) long content tokens per image (prefix
            tokens not counted).
        embed_index (Tensor): (num_packed,) row of every packed token in the
            embedding table (the prefix rows, then scale 0, 1, ... rows of
            every image), see :meth:`embedding_rows`.
        position_index (Tensor): (num_packed,) row of every packed token in a
            batch-free per-scale table (scale 0, 1, ... positions, then one
            identity row for prefix and padding tokens), see
            :meth:`position_rows`.
        packed_image_index (Tensor): (num_packed,) image of every packed
            token (padding tokens: the last image).
        overflow (Tensor, optional): Static mode: 0-dim bool, True when the
            batch needed more than ``pack_size`` tokens (tokens were dropped).
            Never True for a :class:`~mmapt.tokenizer.PatchTokenizer`'s
            layouts, which cap the batch to fit first (see ``capped``).
        capped (Tensor, optional): Static mode, from the tokenizer: 0-dim
            bool, True when the selection needed more than ``pack_size``
            tokens and was capped by score to fit (None: no cap possible,
            e.g. exact packing or a ``pack_size`` that holds every layout).
    """

    batch_size: int
    grid_size: Tuple[int, int]
    num_scales: int
    window_size: int
    num_prefix_tokens: int
    pack_size: Optional[int]
    num_packed: int
    cu_seqlens_image: Tensor
    max_seqlen_image: int
    cu_seqlens_window: Tensor
    max_seqlen_window: int
    num_real_groups_image: int
    num_real_groups_window: int
    host_cu_seqlens_image: Optional[List[int]]
    host_cu_seqlens_window: Optional[List[int]]
    host_scale_counts: Optional[List[int]]
    cell_to_token: Tensor
    tokens_per_image: Tensor
    embed_index: Tensor
    position_index: Tensor
    packed_image_index: Tensor
    overflow: Optional[Tensor]
    token_slot: Tensor  # (num_packed,) slot of every packed token
    slot_code: Tensor  # (slots,) scale of the token at a slot, -1, S=prefix
    capped: Optional[Tensor] = None

    # ------------------------------------------------------- sizes (host)
    @property
    def static(self) -> bool:
        return self.pack_size is not None

    @property
    def num_real_packed(self) -> int:
        """Real packed tokens (content + prefix); reads the device in static
        mode."""
        if self.host_cu_seqlens_image is not None:
            return self.host_cu_seqlens_image[-1]
        return int(self.cu_seqlens_image[self.num_real_groups_image])

    @property
    def num_tokens(self) -> int:
        """Content tokens of the batch (prefix tokens not counted)."""
        return self.num_real_packed - self.batch_size * self.num_prefix_tokens

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

    # ------------------------------------- per content token (lazy, host)
    @cached_property
    def _content_tables(self) -> Dict[str, Tensor]:
        # Computed once per layout and gone with it (a memo, not a bounded
        # cache: one value per object, nothing to evict or to pin, since
        # no captured graph reads the per-token host-side tables).
        height, width = self.grid_size
        per_image = self.num_prefix_tokens + height * width
        real = self.num_real_packed
        slots = self.token_slot[:real]
        code = self.slot_code[slots]
        position = (code < self.num_scales).nonzero(as_tuple=True)[0]
        slots, code = slots[position], code[position]
        tables = _slot_tables(self.batch_size, self.grid_size,
                              self.window_size, self.num_prefix_tokens,
                              self.num_scales, slots.device)
        image = slots // per_image
        cell = tables['perm'][slots % per_image - self.num_prefix_tokens]
        prefix = (
            self.slot_code[self.token_slot[:real]] == self.num_scales).nonzero(
                as_tuple=True)[0]
        return dict(
            content_index=position,
            prefix_index=prefix,
            image_index=image,
            scale_index=code,
            row=cell // width,
            col=cell % width)

    # Views of the tables above, each documented once.
    content_index = _content_table(
        'content_index', '(N,) packed position of each content token.')
    prefix_index = _content_table(
        'prefix_index',
        '(B * P,) packed positions of the prefix tokens, image-major.')
    image_index = _content_table('image_index',
                                 '(N,) image of each content token.')
    scale_index = _content_table(
        'scale_index', '(N,) scale of each content token (0: base patches).')
    row = _content_table('row',
                         '(N,) top-left cell row of each content token.')
    col = _content_table('col',
                         '(N,) top-left cell column of each content token.')

    @property
    def side(self) -> Tensor:
        """(N,) patch side in cells."""
        return 1 << self.scale_index

    @property
    def window_index(self) -> Tensor:
        """(N,) global window group id (the image without windows)."""
        if not self.window_size:
            return self.image_index
        ws = self.window_size
        win_rows, win_cols = (-(-n // ws) for n in self.grid_size)
        return self.image_index * (win_rows * win_cols) + \
            self.row // ws * win_cols + self.col // ws

    def centers(self) -> Tensor:
        """(N, 2) float (row, col) token centres in cell units."""
        half = (self.side.float() - 1) / 2
        return torch.stack([self.row.float() + half,
                            self.col.float() + half],
                           dim=1)

    def window_origin(self) -> Tensor:
        """(N, 2) long top-left cell of each token's window (0 without)."""
        if not self.window_size:
            return torch.zeros(
                self.num_tokens, 2, dtype=torch.long, device=self.row.device)
        ws = self.window_size
        return torch.stack([self.row // ws * ws, self.col // ws * ws], dim=1)

    # ------------------------------------------------ tables the rows index
    def embedding_rows(self) -> List[Tuple[int, int]]:
        """``(rows, cols)`` per scale of the embedding table
        :attr:`embed_index` points into: first ``B * P`` prefix rows
        (image-major), then for each scale its ``B * rows * cols`` rows
        (image-major, row-major); scales after the last one any token uses
        may be left out."""
        height, width = self.grid_size
        return [(height >> s, width >> s) for s in range(self.num_scales)]

    def position_rows(self) -> int:
        """Rows of the batch-free table :attr:`position_index` points into:
        every scale's ``rows * cols`` positions, then one identity row."""
        return sum(r * c for r, c in self.embedding_rows()) + 1

    def check_fits(self) -> None:
        """Static mode: raise a ValueError if the batch needed more tokens
        than ``pack_size`` (reads the device)."""
        if self.overflow is not None and bool(self.overflow):
            raise ValueError(
                f'this batch needed {self.num_real_packed} packed tokens '
                f'(prefix tokens included) but pack_size={self.pack_size}; '
                f'raise pack_size (batch x (grid cells + prefix tokens) = '
                f'{self.batch_size * (self.baseline_tokens + self.num_prefix_tokens)}'  # noqa: E501
                ' never overflows) or use pack_size=None')

    # ------------------------------------------------------------ to dense
    def unpack(self, tokens: Tensor) -> Tensor:
        """Packed tokens (``num_packed``, C) -> dense map (B, C, Hc, Wc).

        Each token is repeated over all the cells it covers; prefix and
        padding tokens cover no cell and are left out.
        """
        self._check_tokens(tokens)
        height, width = self.grid_size
        dense = tokens.index_select(0, self.cell_to_token.reshape(-1))
        return dense.view(self.batch_size, height, width,
                          -1).permute(0, 3, 1, 2)

    def unpack_all(self, outputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """:meth:`unpack` of several packed outputs at once, each returned
        contiguous: one gather and one copy for all of them."""
        if len(outputs) == 1:
            return (self.unpack(outputs[0]).contiguous(), )
        for tokens in outputs:
            self._check_tokens(tokens)
        height, width = self.grid_size
        dims = outputs[0].shape[1]
        dense = torch.cat(outputs, 1).index_select(0,
                                                   self.cell_to_token.view(-1))
        dense = dense.view(self.batch_size, height, width, len(outputs),
                           dims).permute(3, 0, 4, 1, 2).contiguous()
        return dense.unbind(0)

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
    if num_scales < 2:
        raise ValueError('select_patches needs at least one scale above base')
    keep: List[Optional[Tensor]] = [None] * num_scales
    covered: Optional[Tensor] = None  # cells of scale i already taken
    for scale in range(num_scales - 1, 0, -1):
        ent = entropies[scale - 1]
        expected = (grid_size[0] >> scale, grid_size[1] >> scale)
        if tuple(ent.shape[1:]) != expected:
            raise ValueError(f'entropy map of scale {scale} has shape '
                             f'{tuple(ent.shape[1:])}, expected {expected}')
        selected = ent < thresholds[scale - 1]
        if covered is None:
            covered = selected
        else:
            covered = _upsample2(covered)
            selected = selected > covered  # below threshold and not covered
            covered = covered | selected
        keep[scale] = selected
    keep[0] = ~_upsample2(covered)
    return keep  # type: ignore[return-value]


def _upsample2(mask: Tensor) -> Tensor:
    """Nearest 2x upsampling of a (B, h, w) mask."""
    batch, height, width = mask.shape
    index = cached_constant(
        ('up2', height, width, str(mask.device)),
        lambda: _upsample2_index(height, width, mask.device))
    return mask.view(batch,
                     -1).index_select(1, index).view(batch, 2 * height,
                                                     2 * width)


def _upsample2_index(height: int, width: int, device: torch.device) -> Tensor:
    rows = torch.arange(2 * height, device=device) // 2
    cols = torch.arange(2 * width, device=device) // 2
    return (rows[:, None] * width + cols).view(-1)


# Slot tables: for a batch size, grid, window size, prefix count and number
# of scales, everything about the packed order that does not depend on the
# image content. A "slot" is a place a packed token may come from: per image,
# its P prefix slots, then its cells in packed (window) order. The packed
# sequence is the slots that hold a token, in slot order.
_CONSTANTS = BoundedCache(32)


def cached_constant(key: tuple, compute: Callable[[], T]) -> T:
    """``compute()`` (tensors that depend only on shapes, never on data),
    cached by ``key`` (include the device) in the tokenizer's constants
    (:class:`~mmapt.tokenizer.cache_pins.BoundedCache`)."""
    return _CONSTANTS.get(key, compute)


def _slot_tables(batch: int, grid: Tuple[int,
                                         int], window: int, num_prefix: int,
                 num_scales: int, device: torch.device) -> Dict[str, Tensor]:
    key = ('slots', batch, tuple(grid), window, num_prefix, num_scales,
           str(device))
    return cached_constant(
        key, lambda: _make_slot_tables(batch, grid, window, num_prefix,
                                       num_scales, device))


def _make_slot_tables(batch: int, grid: Tuple[int, int], window: int,
                      num_prefix: int, num_scales: int,
                      device: torch.device) -> Dict[str, Tensor]:
    height, width = grid
    cells = height * width
    per_image = num_prefix + cells
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    if window:
        win_cols = -(-width // window)
        window_id = rows // window * win_cols + cols // window
        order_key = window_id * (window * window) + \
            rows % window * window + cols % window
        perm = torch.argsort(order_key)
        # Window ends, in cells of the packed order of one image. Counted
        # into a table of known size (not bincount): under torch.compile
        # the number of groups stays a plain int that plans can loop over.
        cells_per_window = torch.zeros(
            -(-height // window) * win_cols, dtype=torch.long,
            device=device).index_add_(0, window_id, torch.ones_like(window_id))
        ends = torch.cumsum(cells_per_window, 0)
    else:
        perm = torch.arange(cells, device=device)
        ends = torch.tensor([cells], device=device)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(cells, device=device)
    images = torch.arange(batch, device=device)

    # Group boundaries in slots (exclusive ends): per image its prefix
    # group (with windows), then its windows; images end at per_image.
    image_ends = (images + 1) * per_image
    if window:
        starts = images[:, None] * per_image + num_prefix
        window_ends = starts + ends[None, :]
        if num_prefix:
            window_ends = torch.cat([starts, window_ends], 1)
        window_bounds = torch.cat([
            torch.zeros(1, dtype=torch.long, device=device),
            window_ends.reshape(-1)
        ])
    image_bounds = torch.cat(
        [torch.zeros(1, dtype=torch.long, device=device), image_ends])

    # Rows per code (0..S-1 = scale, S = prefix) and slot, stacked code-
    # major: row (code, slot) is code * slots + slot. Cells in packed order:
    cell = perm[None, :].expand(batch, cells)
    r, c = cell // width, cell % width
    b = images[:, None].expand(batch, cells)
    embed_rows, pos_rows = [], []
    # Embedding rows: the B * P prefix rows first, then every scale's maps
    # (so scales above the last one used may be left out of the table).
    embed_offset, pos_offset = batch * num_prefix, 0
    for s in range(num_scales):
        rows_s, cols_s = height >> s, width >> s
        here = (r >> s) * cols_s + (c >> s)
        embed = torch.zeros(batch, per_image, dtype=torch.long, device=device)
        embed[:, num_prefix:] = embed_offset + b * (rows_s * cols_s) + here
        pos = torch.zeros(batch, per_image, dtype=torch.long, device=device)
        pos[:, num_prefix:] = pos_offset + here
        embed_rows.append(embed)
        pos_rows.append(pos)
        embed_offset += batch * rows_s * cols_s
        pos_offset += rows_s * cols_s
    prefix_rows = torch.zeros(
        batch, per_image, dtype=torch.long, device=device)
    prefix_rows[:, :num_prefix] = images[:, None] * num_prefix + \
        torch.arange(num_prefix, device=device)
    embed_rows.append(prefix_rows)
    # Prefix (and padding) tokens: the identity row (no position).
    pos_rows.append(torch.full_like(pos_rows[0], pos_offset))

    # For every cell (row-major, image-major) and scale s, the slot of the
    # scale-s-aligned cell above-left of it: the covering token's slot is
    # the one whose code is s there.
    dense_r = rows[None, :]
    dense_c = cols[None, :]
    candidates, mask_slots, mask_codes = [], [], []
    for s in range(num_scales):
        aligned = (dense_r >> s << s) * width + (dense_c >> s << s)
        candidates.append(images[:, None] * per_image + num_prefix +
                          inverse[aligned])
        top_left = (
            torch.arange(0, height, 1 << s, device=device)[:, None] * width +
            torch.arange(0, width, 1 << s, device=device)).view(-1)
        slots_s = images[:, None] * per_image + num_prefix + \
            inverse[top_left]
        mask_slots.append(slots_s.view(-1))
        mask_codes.append(torch.full_like(mask_slots[-1], s))
    tables = dict(
        perm=perm,
        image_bounds=image_bounds,
        window_bounds=window_bounds if window else image_bounds,
        embed_rows=torch.stack(embed_rows).reshape(-1),
        pos_rows=torch.stack(pos_rows).reshape(-1),
        candidates=torch.stack(candidates).reshape(-1),
        scales=torch.arange(num_scales, device=device)[:, None],
        scale_ids=torch.arange(num_scales, device=device),
        # The slot of the top-left cell of every mask entry, scale by
        # scale (image-major, row-major), and that scale.
        mask_slots=torch.cat(mask_slots),
        mask_codes=torch.cat(mask_codes),
        # -1 as a tensor: a Python scalar would cost a conversion op.
        no_code=torch.full((), -1, device=device),
        # Code of every slot before any mask is read: S at prefix slots,
        # -1 at cells.
        slot_template=torch.cat([
            torch.full((batch, num_prefix), num_scales, device=device),
            torch.full((batch, cells), -1, device=device)
        ], 1).view(-1),
    )
    return tables


def check_window_size(window_size: int,
                      largest_cells: int,
                      patch_size: Optional[int] = None) -> int:
    """``window_size`` (window side in cells; 0 = no windows) if a layout
    can use it, else a ValueError naming the fix: an int >= 0 that is a
    multiple of ``largest_cells``, the largest patch's side in cells, so
    no patch straddles two windows (``patch_size``: the cell side in
    pixels, for the message)."""
    if isinstance(window_size, bool) or not isinstance(window_size, int) \
            or window_size < 0:
        raise ValueError(
            f'window_size must be an int >= 0 (the window side in cells; '
            f'0 = no windows, global attention), got {window_size!r}')
    if window_size % largest_cells:
        suggested = max(largest_cells,
                        window_size // largest_cells * largest_cells)
        cell = '' if patch_size is None else f'{patch_size}-px '
        largest = '' if patch_size is None else \
            f' ({largest_cells * patch_size} px)'
        raise ValueError(
            f'window_size {window_size} (in {cell}cells) must be a multiple '
            f'of the largest patch, {largest_cells} cells{largest}, so no '
            f'patch straddles two windows; e.g. window_size={suggested}')
    return window_size


def min_pack_size(batch: int,
                  grid: Tuple[int, int],
                  num_scales: int,
                  num_prefix_tokens: int = 0) -> int:
    """Fewest packed tokens a batch can have: every image one grid of the
    largest patches, plus its prefix tokens."""
    top = num_scales - 1
    return batch * (num_prefix_tokens + (grid[0] >> top) * (grid[1] >> top))


def max_pack_size(batch: int,
                  grid: Tuple[int, int],
                  num_prefix_tokens: int = 0) -> int:
    """Most packed tokens a batch can have (nothing merged): a ``pack_size``
    this large never overflows."""
    return batch * (num_prefix_tokens + grid[0] * grid[1])


def check_pack_size_spec(value: object) -> PackSizeSpec:
    """``value`` as a ``pack_size`` setting, or a ValueError naming it and
    the accepted forms. Lists become sorted tuples without repeats."""

    def positive(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if value is None or positive(value) or (isinstance(value, str)
                                            and value == 'auto'):
        return value  # type: ignore[return-value]
    if isinstance(value,
                  (list, tuple)) and value and all(positive(v) for v in value):
        return tuple(sorted(set(value)))
    raise ValueError(
        f'pack_size={value!r} is not valid: use None (exact packing), a '
        'positive int (one static size, e.g. 4096), a non-empty list of '
        'positive ints (token buckets, e.g. [2048, 4096, 6144]) or \'auto\' '
        '(buckets at 25/50/75/100% of the canvas\'s tokens)')


def round_up_pack_size(size: int, multiple: int = AUTO_BUCKET_MULTIPLE) -> int:
    """``size`` packed tokens rounded up to a multiple of ``multiple`` (the
    buckets' alignment, which suits the GPU kernels)."""
    return -(-size // multiple) * multiple


def default_pack_sizes(batch: int,
                       grid: Tuple[int, int],
                       num_prefix_tokens: int = 0) -> Tuple[int, ...]:
    """The ``'auto'`` token buckets of a batch: 25, 50, 75 and 100% of the
    grid's base tokens per image, plus its prefix tokens, times the batch;
    each below 100% rounded up to a multiple of
    :data:`AUTO_BUCKET_MULTIPLE` packed tokens (at most the 100% bucket,
    which is :func:`max_pack_size` and never overflows)."""
    cells = grid[0] * grid[1]
    largest = max_pack_size(batch, grid, num_prefix_tokens)
    sizes = set()
    for fraction in AUTO_BUCKET_FRACTIONS:
        size = batch * (math.ceil(fraction * cells) + num_prefix_tokens)
        sizes.add(min(round_up_pack_size(size), largest))
    return tuple(sorted(sizes))


def choose_pack_size(packed_tokens: int, buckets: Sequence[int]) -> int:
    """The smallest of ``buckets`` that holds ``packed_tokens`` (prefix
    tokens included); the largest when none does (the tokenizer then caps
    the batch to it)."""
    if not buckets:
        raise ValueError('choose_pack_size needs at least one bucket')
    fitting = [size for size in buckets if size >= packed_tokens]
    return min(fitting) if fitting else max(buckets)


def fit_pack_sizes(packed_tokens: Sequence[int],
                   num_buckets: int,
                   largest: int,
                   multiple: int = AUTO_BUCKET_MULTIPLE) -> Tuple[int, ...]:
    """Token buckets fitted to calibration batches: the ``num_buckets``
    sizes (ascending) that minimise the tokens the batches run, i.e. the
    sum over the batches of the bucket :func:`choose_pack_size` gives each.

    The largest bucket is always ``largest`` (:func:`max_pack_size` of the
    canvas, so that no batch is ever capped); the others are multiples of
    ``multiple``. Exact: a batch's cost depends on its count only through
    the count rounded up to ``multiple``, so the sorted distinct rounded
    counts are split into runs by dynamic programming over split points,
    each run taking its largest rounded count as its bucket. Fewer sizes
    come back when fewer suffice (e.g. fewer distinct counts than buckets).

    Args:
        packed_tokens (Sequence[int]): Packed tokens (prefix included) of
            each calibration batch, at most ``largest``.
        num_buckets (int): Number of buckets K >= 1, the largest included.
        largest (int): The largest bucket, the canvas's maximum.
        multiple (int): The other buckets are multiples of this many
            tokens. Defaults to :data:`AUTO_BUCKET_MULTIPLE`.
    """
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) \
            or num_buckets < 1:
        raise ValueError(f'the number of buckets must be an int >= 1 (the '
                         f'largest, {largest}, included), got {num_buckets!r}')
    if multiple < 1:
        raise ValueError(f'multiple must be >= 1, got {multiple}')
    counts = [int(c) for c in packed_tokens]
    if not counts:
        raise ValueError('fitting buckets needs the packed-token counts of '
                         'at least one calibration image')
    if min(counts) < 1 or max(counts) > largest:
        raise ValueError(
            f'packed-token counts must be in [1, {largest}] (the largest '
            f'bucket), got {min(counts)}..{max(counts)}: count them on the '
            'canvas the buckets are for')
    # Distinct rounded counts below the largest bucket, and how many
    # batches each has; those that round up to it run there anyway.
    weight: Dict[int, int] = {}
    for count in counts:
        size = round_up_pack_size(count, multiple)
        if size < largest:
            weight[size] = weight.get(size, 0) + 1
    sizes = sorted(weight)
    n = len(sizes)
    ahead = [0] * (n + 1)  # ahead[i]: batches in sizes[i:]
    for i in range(n - 1, -1, -1):
        ahead[i] = ahead[i + 1] + weight[sizes[i]]
    # cost[k][i]: tokens of the batches in sizes[:i] with k buckets among
    # them, the last one sizes[i - 1]; every batch above runs in
    # ``largest``. choice[k][i]: where that last run starts.
    inf = float('inf')
    cost = [[inf] * (n + 1) for _ in range(num_buckets)]
    choice = [[0] * (n + 1) for _ in range(num_buckets)]
    cost[0][0] = 0
    for k in range(1, num_buckets):
        for i in range(1, n + 1):
            for j in range(i):  # the run sizes[j:i] takes sizes[i - 1]
                if cost[k - 1][j] == inf:
                    continue
                run = ahead[j] - ahead[i]
                total = cost[k - 1][j] + run * sizes[i - 1]
                if total < cost[k][i]:
                    cost[k][i], choice[k][i] = total, j
    best_k, best_i, best = 0, 0, inf
    for k in range(num_buckets):
        for i in range(n + 1):
            total = cost[k][i] + ahead[i] * largest
            if total < best:
                best_k, best_i, best = k, i, total
    fitted = [largest]
    k, i = best_k, best_i
    while k > 0:
        fitted.append(sizes[i - 1])
        k, i = k - 1, choice[k][i]
    return tuple(sorted(fitted))


def build_layout(keep_masks: Sequence[Tensor],
                 grid_size: Tuple[int, int],
                 window_size: int = 0,
                 num_prefix_tokens: int = 0,
                 pack_size: Optional[int] = None) -> PatchLayout:
    """Pack the selected patches of every scale into one ordered sequence.

    Args:
        keep_masks (Sequence[Tensor]): Per scale ``i``, a (B, Hc / 2**i,
            Wc / 2**i) bool mask of the patches that are tokens.
        grid_size (tuple[int, int]): The base grid (Hc, Wc).
        window_size (int): Window side in cells, a multiple of the largest
            patch side in cells; 0 (default): no windows. Windows at the
            bottom/right
            border may be partial.
        num_prefix_tokens (int): Class / register tokens opening each image's
            slice of the packed sequence. Defaults to 0.
        pack_size (int, optional): Static-shape mode: the packed sequence
            (prefix tokens included) is padded to exactly this many tokens
            and nothing is read back to the host. A batch that needs more
            sets ``layout.overflow`` (its extra tokens are dropped). None
            (default): exact packing, one host read of the offsets.

    Returns:
        PatchLayout: The packed layout.
    """
    height, width = grid_size
    batch = keep_masks[0].shape[0]
    num_scales = len(keep_masks)
    device = keep_masks[0].device
    if num_prefix_tokens < 0:
        raise ValueError(f'num_prefix_tokens must be >= 0, got '
                         f'{num_prefix_tokens}')
    check_window_size(window_size, 1 << (num_scales - 1))
    if pack_size is not None:
        check_pack_size(pack_size, batch, grid_size, num_scales,
                        num_prefix_tokens)
    tables = _slot_tables(batch, grid_size, window_size, num_prefix_tokens,
                          num_scales, device)
    per_image = num_prefix_tokens + height * width

    # Scale code of every slot: s where a scale-s token has its top-left
    # cell, -1 at the other cells, S at prefix slots. Every mask entry
    # writes into its top-left cell's slot (a constant index): s where
    # the mask is set, -1 elsewhere, and the largest write wins, which is
    # the one scale with a token there (the masks tile the grid).
    flat = torch.cat([mask.reshape(-1) for mask in keep_masks])
    writes = torch.where(flat, tables['mask_codes'], tables['no_code'])
    code = tables['slot_template'].clone().scatter_reduce_(
        0, tables['mask_slots'], writes, 'amax')
    is_token = code >= 0
    # int32 like the kernels' offsets, so they need no conversion.
    running = torch.cumsum(is_token, 0, dtype=torch.int32)
    # Tokens before each slot boundary = the group offsets.
    counts = torch.cat([running.new_zeros(1), running])
    cu_image = counts.index_select(0, tables['image_bounds'])
    cu_window = counts.index_select(0, tables['window_bounds']) \
        if window_size else cu_image
    real_image_groups = cu_image.numel() - 1
    real_window_groups = cu_window.numel() - 1

    overflow = None
    host_image = host_window = host_scales = None
    if pack_size is None:
        scale_counts = (code[:, None] == tables['scale_ids']).sum(0)
        # The one host read of the forward: offsets and scale counts.
        windows = [cu_window] if window_size else []
        host = torch.cat([cu_image, *windows, scale_counts]).tolist()
        host_image = host[:cu_image.numel()]
        host_window = host[cu_image.numel():-num_scales] or host_image
        host_scales = host[-num_scales:]
        num_packed = host_image[-1]
        max_image = max(b - a for a, b in zip(host_image, host_image[1:]))
        max_window = max(b - a for a, b in zip(host_window, host_window[1:]))
        slots = torch.nonzero_static(is_token, size=num_packed).view(-1)
    else:
        num_packed = pack_size
        total = cu_image[-1]  # real packed tokens
        overflow = total > pack_size
        max_image = per_image
        max_window = per_image if not window_size else max(
            window_size * window_size, num_prefix_tokens)
        cu_image = _with_padding_groups(cu_image, pack_size, max_image)
        cu_window = cu_image if not window_size else \
            _with_padding_groups(cu_window, pack_size, max_window)
        # Padding tokens read the last image's first slot, which always
        # holds a token (a prefix token, or the one at cell (0, 0)); any
        # token would do, their outputs are dropped.
        slots = torch.nonzero_static(
            is_token, size=pack_size,
            fill_value=code.numel() - per_image).view(-1)

    slot_code = code.index_select(0, slots)
    # Row of (code, slot) in the stacked per-code tables.
    row_key = torch.add(slots, slot_code, alpha=code.numel())
    embed_index = tables['embed_rows'].index_select(0, row_key)
    position_index = tables['pos_rows'].index_select(0, row_key)
    packed_image_index = torch.div(slots, per_image, rounding_mode='floor')

    # The covering token of every cell: among the scale-aligned candidate
    # slots, the one holding a token of that scale.
    candidates = tables['candidates']
    found = code.index_select(0, candidates).view(num_scales, -1)
    cover = (candidates.view(num_scales, -1) *
             (found == tables['scales'])).sum(0)
    # Tokens in the slots before a token's slot = its packed index.
    cell_to_token = counts.index_select(0, cover)
    if pack_size is not None:  # dropped tokens (overflow) stay in range
        cell_to_token = cell_to_token.clamp_(max=pack_size - 1)

    bounds = cu_image if pack_size is None else \
        cu_image[:real_image_groups + 1]
    tokens_per_image = bounds.diff()
    if num_prefix_tokens:
        tokens_per_image = tokens_per_image - num_prefix_tokens
    tokens_per_image = tokens_per_image.long()
    return PatchLayout(
        batch_size=batch,
        grid_size=(height, width),
        num_scales=num_scales,
        window_size=window_size,
        num_prefix_tokens=num_prefix_tokens,
        pack_size=pack_size,
        num_packed=num_packed,
        cu_seqlens_image=cu_image,
        max_seqlen_image=max_image,
        cu_seqlens_window=cu_window,
        max_seqlen_window=max_window,
        num_real_groups_image=real_image_groups,
        num_real_groups_window=real_window_groups,
        host_cu_seqlens_image=host_image,
        host_cu_seqlens_window=host_window,
        host_scale_counts=host_scales,
        cell_to_token=cell_to_token.view(batch, height, width),
        tokens_per_image=tokens_per_image,
        embed_index=embed_index,
        position_index=position_index,
        packed_image_index=packed_image_index,
        overflow=overflow,
        token_slot=slots,
        slot_code=code,
    )


def check_pack_size(pack_size: int,
                    batch: int,
                    grid: Tuple[int, int],
                    num_scales: int,
                    num_prefix_tokens: int = 0) -> None:
    """ValueError unless ``pack_size`` (one int) can hold a batch of this
    size."""
    if isinstance(pack_size, bool) or not isinstance(pack_size, int) or \
            pack_size < 1:
        raise ValueError(f'pack_size must be a positive int here (one '
                         f'static size), got {pack_size!r}')
    least = min_pack_size(batch, grid, num_scales, num_prefix_tokens)
    if pack_size < least:
        raise ValueError(
            f'pack_size={pack_size} is too small for a batch of {batch} on a '
            f'{grid[0]}x{grid[1]} grid: even fully merged it needs {least} '
            f'tokens (nothing merged: '
            f'{max_pack_size(batch, grid, num_prefix_tokens)})')


# Static mode's padding tokens attend within groups of at most this many
# tokens: under the varlen kernel they cost (padding tokens) x 128 pairs,
# not (padding tokens)^2, and the window / image bound stays max_seqlen.
_PADDING_GROUP = 128


def padding_group_size(bound: int) -> int:
    """Tokens per padding group of static mode for groups bounded by
    ``bound`` (never more than ``bound``, so ``max_seqlen`` holds)."""
    return min(bound, _PADDING_GROUP)


def _with_padding_groups(cu: Tensor, pack_size: int, bound: int) -> Tensor:
    """Offsets of the real groups (clamped to ``pack_size``), then of
    ``ceil(pack_size / padding_group_size(bound))`` padding groups of at
    most that many tokens up to ``pack_size``: as many as the emptiest
    batch needs, so the offsets have a length fixed by the group count
    and ``pack_size``; trailing ones may be empty."""
    size = padding_group_size(bound)
    steps = torch.arange(
        1, math.ceil(pack_size / size) + 1, device=cu.device) * size
    return torch.cat([cu, cu[-1:] + steps]).clamp_(max=pack_size)
