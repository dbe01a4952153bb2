"""EVA-02 2D rotary position embedding at arbitrary token coordinates.

The formula is EVA-02's (numerically identical to timm's
``RotaryEmbeddingCat`` + ``apply_rot_embed_cat``, NOT mmpretrain's):

* ``head_dim / 2`` channels per axis, frequencies
  ``1 / 10000 ** (arange(0, d, 2) / d)`` with ``d = head_dim / 2``;
* a position ``x`` on an axis of a grid of ``grid_len`` cells maps to
  ``t = x / grid_len * ref_len`` (``ref_len`` = pretraining grid, 16);
* angles ``t * freq``, rows first then columns, each repeated twice
  (interleaved), applied as ``x * cos + rot(x) * sin`` with pairs
  ``(x0, x1) -> (-x1, x0)``.

Here ``x`` may be any float, so APT's large patches are evaluated at their
centres, and base tokens get exactly the plain model's integer positions.

Tables are real (no complex tensors: inductor falls back on complex ops and
ONNX / TensorRT cannot export them). A table is ``(..., 2, head_dim)``
float32, two rows per position, interleaved like the channels:

* ``cos``: ``(cos_0, cos_0, cos_1, cos_1, ...)``;
* ``sin``: the sign of the rotation folded in, ``(-sin_0, sin_0, -sin_1,
  sin_1, ...)``;

so the rotation is two products and a sum, ``x * cos + swap_pairs(x) *
sin`` with ``swap_pairs`` taking ``(x0, x1)`` to ``(x1, x0)``: per pair
``x0 cos - x1 sin`` and ``x1 cos + x0 sin``. Prefix and padding tokens get
the identity row (cos 1, sin 0): exact, no branch.

Three ways to run it, same values (tested against the pair formula):

* traced (``torch.compile``, ``torch.export``, ONNX): that expression, no
  in-place writes; inductor fuses it into one kernel, ONNX exports plain
  slices, products and sums;
* eager, ``inplace=True`` without autograd (inference; what the EVA-02
  blocks ask for on the q|k slice of their fresh qkv projection): rotated
  in place, chunk by chunk on CPU, the swapped pairs (and, for fp16/bf16,
  the float32 values) held in a cache-sized temporary. No tensor of q|k's
  size is allocated: on CPU a fresh allocation that large costs about a
  pass over it in page faults;
* eager otherwise (training, or a caller that keeps ``x``): the expression
  with the sum done in place.

Against the complex product this replaces (``(x0 + i x1)(cos + i sin)``,
one fused kernel), the in-place path is about 1.7x faster in float32 and
3.6x under bf16 on CPU on an EVA-02-B map at 1536 px, but about 1.8x
slower in float32 on maps small enough for the allocator to reuse memory
(1024 px): its arithmetic is three elementwise passes to the complex
kernel's one. docs/backbone.md ("RoPE without complex numbers") has the
numbers and the command.

Precision under autocast: the tables stay float32 and the rotation
computes in float32 from fp16/bf16 q and k, rounding once when it hands
them back in their own dtype. That is what the official EVA-02 and timm do
(fp32 RoPE buffers, ``.type_as(v)`` after the rotation), so autocast runs
match them; half-precision tables would put a relative error of up to
2**-9 on every cos and sin on top of rounding q and k several times. The
float32 work costs nothing extra where it is fused (compiled) or cache
resident (the in-place CPU path), and one conversion pass otherwise.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

#: Rows of a RoPE table: ``table[..., COS, :]``, ``table[..., SIN, :]``.
COS, SIN = 0, 1


def rope_frequencies(head_dim: int, temperature: float = 10000.) -> Tensor:
    """(head_dim // 4,) float32 frequencies of one axis."""
    if head_dim % 4:
        raise ValueError(f'2D RoPE needs head_dim % 4 == 0, got {head_dim}')
    num_bands = head_dim // 4
    # Same op order as timm's freq_bands, so tables agree bit for bit.
    exponent = torch.arange(num_bands, dtype=torch.int64).float() / num_bands
    return 1. / (temperature**exponent)


def patch_centers(grid: Tuple[int, int], num_scales: int,
                  device: torch.device) -> Tensor:
    """(sum_i rows_i * cols_i, 2) float (row, col) centres, in cell units,
    of every scale-``i`` patch position of a ``grid`` (scale-major, then
    row-major): the coordinates APT evaluates RoPE at."""
    centers = []
    for scale in range(num_scales):
        side = 1 << scale
        half = (torch.tensor(float(side)) - 1) / 2
        rows = torch.arange(0, grid[0] >> scale << scale, side, device=device)
        cols = torch.arange(0, grid[1] >> scale << scale, side, device=device)
        rc = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1)
        centers.append(rc.reshape(-1, 2).float() + half.to(device))
    return torch.cat(centers)


def rope_table(angles: Tensor) -> Tensor:
    """(..., head_dim / 2) pair angles -> (..., 2, head_dim) real table."""
    cos, sin = angles.cos(), angles.sin()
    return torch.stack(
        [torch.stack([cos, cos], -1),
         torch.stack([-sin, sin], -1)], -3).flatten(-2)


def identity_rope(num: int, table: Tensor) -> Tensor:
    """(num, 2, head_dim) rows that rotate nothing (cos 1, sin 0), in
    ``table``'s dtype and device: for prefix and padding tokens."""
    rows = table.new_zeros(num, *table.shape[-2:])
    rows[:, COS] = 1
    return rows


def swap_pairs(x: Tensor) -> Tensor:
    """``(x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...)`` on the last dim."""
    first, second = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([second, first], -1).flatten(-2)


def _check_table(x: Tensor, table: Tensor) -> None:
    if table.is_complex():
        raise TypeError(
            'apply_rope got a complex RoPE table; tables are real '
            '(..., 2, head_dim) now: build them with RotaryEmbedding2D')
    if table.dim() < 2 or table.shape[-2] != 2 or \
            table.shape[-1] != x.shape[-1] or x.shape[-1] % 2:
        raise ValueError(
            f'apply_rope needs a (..., 2, head_dim) table for x (..., '
            f'head_dim) with an even head_dim; got x {tuple(x.shape)}, table '
            f'{tuple(table.shape)}. Build the table with RotaryEmbedding2D '
            'and add broadcast dims before its last two (table[:, None])')


#: Elements per chunk of the in-place CPU rotation: its temporaries
#: (2 MiB each in float32) stay in cache.
_CHUNK_ELEMENTS = 1 << 19


def _rotate_inplace(x: Tensor, table: Tensor) -> Tensor:
    """Rotate ``x`` in place, chunk by chunk along its longest leading dim
    (one chunk off CPU, where caching allocators make the temporaries
    cheap)."""
    dim = max(range(x.dim() - 1), key=lambda d: x.shape[d])
    table_dim = dim - (x.dim() - 1) + (table.dim() - 2)
    slice_table = table_dim >= 0 and table.shape[table_dim] > 1
    size = x.shape[dim]
    step = size
    if x.device.type == 'cpu':
        step = max(1, _CHUNK_ELEMENTS * size // max(x.numel(), 1))
    for start in range(0, size, step):
        part = x.narrow(dim, start, min(step, size - start))
        rows = table.narrow(table_dim, start, part.shape[dim]) \
            if slice_table else table
        cos, sin = rows.unbind(-2)
        if part.dtype == rows.dtype:
            swapped = swap_pairs(part)
            part.mul_(cos).addcmul_(swapped, sin)
        else:  # compute in the table's precision, round once
            values = part.to(rows.dtype)
            swapped = swap_pairs(values)
            part.copy_(values.mul_(cos).addcmul_(swapped, sin))
    return x


def apply_rope(x: Tensor, table: Tensor, inplace: bool = False) -> Tensor:
    """Rotate the channel pairs of ``x`` (..., head_dim) by a real table
    (..., 2, head_dim) whose leading dims broadcast to ``x``'s.

    Computed in the table's (float32) precision and returned in ``x``'s
    dtype; see the module docstring for the layout and the three paths.

    Args:
        x (Tensor): (..., head_dim) vectors, e.g. q and k.
        table (Tensor): (..., 2, head_dim) table of
            :class:`RotaryEmbedding2D`, broadcastable to ``x``.
        inplace (bool): The caller owns ``x`` and no longer needs its
            values: they may be overwritten, which saves allocating the
            result. Done in eager mode without autograd (inference); use
            the return value either way. Defaults to False.

    Returns:
        Tensor: The rotated vectors, ``x``'s shape and dtype.
    """
    _check_table(x, table)
    cos, sin = table.unbind(-2)
    if torch.compiler.is_compiling():
        # One fusable expression for graph capture: no in-place writes.
        return (x * cos + swap_pairs(x) * sin).to(x.dtype)
    grad = torch.is_grad_enabled() and (x.requires_grad or table.requires_grad)
    if inplace and not grad and x.dim() > 1 and torch.broadcast_shapes(
            x.shape[:-1], table.shape[:-2]) == x.shape[:-1]:
        return _rotate_inplace(x, table)
    return torch.mul(x, cos).addcmul_(swap_pairs(x), sin).to(x.dtype)


class RotaryEmbedding2D(nn.Module):
    """EVA-02 2D RoPE tables for arbitrary (row, col) coordinates.

    Args:
        head_dim (int): Channels per attention head.
        ref_grid (int): Pretraining grid side (``224 // 14 = 16`` for
            EVA-02); positions are rescaled to it.
        temperature (float): RoPE base. Defaults to 10000.
    """

    def __init__(self,
                 head_dim: int,
                 ref_grid: int,
                 temperature: float = 10000.) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.ref_grid = ref_grid
        self.register_buffer(
            'freqs', rope_frequencies(head_dim, temperature), persistent=False)

    def angles(self, coords: Tensor, grid_len: Tuple[float, float]) -> Tensor:
        """(N, head_dim / 2) float32 pair angles: row frequencies first,
        then column frequencies."""
        coords = coords.float()
        t = torch.stack([
            coords[:, 0] / grid_len[0] * self.ref_grid,
            coords[:, 1] / grid_len[1] * self.ref_grid
        ],
                        dim=1)
        return (t[:, :, None] * self.freqs.to(t.device)).flatten(1)

    def forward(self, coords: Tensor, grid_len: Tuple[float, float]) -> Tensor:
        """Tables for N positions.

        Args:
            coords (Tensor): (N, 2) float (row, col) in cell units.
            grid_len (tuple): (rows, cols) of the grid the positions are
                defined on (window side for window attention; for global
                attention the nominal grid, see ``EVA02.nominal_grid``).

        Returns:
            Tensor: (N, 2, head_dim) float32 rows ``cos`` and ``sin``
            (see the module docstring).
        """
        return rope_table(self.angles(coords, grid_len))

    def grid(self,
             height: int,
             width: int,
             device: torch.device,
             grid_len: Optional[Tuple[float, float]] = None) -> Tensor:
        """Tables for every cell of a ``height x width`` grid, row-major.

        ``grid_len`` is the grid the positions are defined on (default: this
        grid); a larger one gives the top-left crop of its tables.
        """
        rows = torch.arange(height, device=device).float()
        cols = torch.arange(width, device=device).float()
        coords = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1)
        return self(coords.reshape(-1, 2), grid_len or (height, width))
