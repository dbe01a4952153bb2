"""Patch embedding and absolute position table helpers."""
import math
from typing import Any, Callable, Hashable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmapt.tokenizer.cache_pins import BoundedCache


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: one conv, kernel = stride = patch.

    The weights are a ``Conv2d`` (``proj``, checkpoint compatible); the
    forward runs it as patchify + matrix product, which on CPU is about twice
    as fast as the strided convolution and yields channels-last tokens
    directly.

    Args:
        patch_size (int): Patch side in pixels.
        embed_dims (int): Output channels.
        in_channels (int): Input channels. Defaults to 3.
    """

    def __init__(self,
                 patch_size: int,
                 embed_dims: int,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> channels-last (B, H / p, W / p, embed_dims)."""
        batch, chans, height, width = x.shape
        p = self.patch_size
        rows, cols = height // p, width // p
        patches = x.view(batch, chans, rows, p, cols,
                         p).permute(0, 2, 4, 1, 3,
                                    5).reshape(batch * rows * cols,
                                               chans * p * p)
        return self.embed_patches(patches).view(batch, rows, cols, -1)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """Embed flattened patches (n, C_in * p * p), channel-major -> (n, D).

        The same map as :meth:`forward`, as a matrix product over only the
        patches that are needed.
        """
        weight = self.proj.weight.flatten(1)
        return F.linear(patches, weight, self.proj.bias)


def resize_pos_embed(pos_embed: Tensor,
                     new_grid: Tuple[int, int],
                     old_grid: Optional[Tuple[int, int]] = None,
                     antialias: bool = False) -> Tensor:
    """Bicubically resample a (1, L, C) position table to a new grid.

    A leading class-token entry (``L = h * w + 1``) is dropped. Uses
    ``align_corners=False`` and no antialiasing, like ViTDet's ``get_abs_pos``
    and EVA-02's detection code.

    Args:
        pos_embed (Tensor): (1, L, C) table, row-major.
        new_grid (tuple[int, int]): Target (rows, cols).
        old_grid (tuple[int, int], optional): Source grid; inferred as a
            square when None.
        antialias (bool): Antialiased bicubic (timm's resampling, a
            different kernel from plain bicubic even when upsampling).

    Returns:
        Tensor: (1, rows * cols, C).
    """
    if pos_embed.dim() != 3:
        raise ValueError('pos_embed must have shape (1, L, C), got '
                         f'{tuple(pos_embed.shape)}')
    length = pos_embed.shape[1]
    if old_grid is None:
        side = math.isqrt(length)
        if side * side != length:
            side = math.isqrt(length - 1)
            if side * side != length - 1:
                raise ValueError(f'cannot infer a square grid from {length} '
                                 'position embeddings')
        old_grid = (side, side)
    num_extra = length - old_grid[0] * old_grid[1]
    if num_extra not in (0, 1):
        raise ValueError(f'{length} position embeddings do not fit a '
                         f'{old_grid[0]}x{old_grid[1]} grid')
    pos_embed = pos_embed[:, num_extra:]
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    grid = pos_embed.reshape(1, old_grid[0], old_grid[1],
                             -1).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(),
        size=tuple(new_grid),
        mode='bicubic',
        align_corners=False,
        antialias=antialias).to(pos_embed.dtype)
    return grid.flatten(2).transpose(1, 2)


def pos_embed_map(pos_embed: Tensor,
                  pos_grid: Tuple[int, int],
                  grid: Tuple[int, int],
                  antialias: bool = False) -> Tensor:
    """(1, G*G, C) table at ``pos_grid`` -> (1, C, rows, cols) map at ``grid``.

    Differentiable with respect to the table; ``antialias`` as in
    :func:`resize_pos_embed`.
    """
    table = pos_embed.reshape(1, pos_grid[0], pos_grid[1],
                              -1).permute(0, 3, 1, 2)
    if tuple(grid) == tuple(pos_grid):
        return table
    return F.interpolate(
        table,
        size=tuple(grid),
        mode='bicubic',
        align_corners=False,
        antialias=antialias)


def resize_patch_kernel(weight: Tensor,
                        new_size: int,
                        mode: str = 'bicubic') -> Tensor:
    """Resample a (D, C, k, k) patch-embedding kernel to ``new_size``.

    Args:
        weight (Tensor): The kernel.
        new_size (int): Target kernel side.
        mode (str): ``'bicubic'`` interpolates the kernel like EVA-02's own
            ``interpolate_patch_14to16.py`` (what its detection checkpoints
            use). ``'pinv'`` is FlexiViT's pseudo-inverse resize: the new
            kernel applied to a bicubically resized patch gives the old
            kernel's response to the original patch (least squares).

    Returns:
        Tensor: (D, C, new_size, new_size) kernel, in the input dtype.
    """
    old_size = weight.shape[-1]
    if weight.shape[-2] != old_size:
        raise ValueError('only square kernels are supported, got '
                         f'{tuple(weight.shape)}')
    if old_size == new_size:
        return weight
    src = weight.float()
    if mode == 'bicubic':
        out = F.interpolate(
            src,
            size=(new_size, new_size),
            mode='bicubic',
            align_corners=False)
    elif mode == 'pinv':
        # Column j: bicubic resize of the j-th old basis image, flattened.
        basis = torch.eye(old_size * old_size).reshape(-1, 1, old_size,
                                                       old_size)
        resize = F.interpolate(
            basis,
            size=(new_size, new_size),
            mode='bicubic',
            align_corners=False,
            antialias=new_size < old_size)
        resize_mat = resize.reshape(old_size * old_size, -1).T  # (new, old)
        pinv = torch.linalg.pinv(resize_mat.T)  # (new, old)
        out = src.flatten(2) @ pinv.T
        out = out.reshape(*weight.shape[:2], new_size, new_size)
    else:
        raise ValueError(f"mode must be 'bicubic' or 'pinv', got {mode!r}")
    return out.to(weight.dtype)


class ParamCache(BoundedCache):
    """Values derived from one parameter, cached while it is unchanged.

    Only without autograd (inference, or a frozen parameter): e.g. bicubic
    resampling of a position table to a 96 x 96 grid costs about as much as
    the patch embedding itself on CPU, and the result only changes with the
    grid or the parameter (``_version`` counts in-place updates). A
    :class:`~mmapt.tokenizer.cache_pins.BoundedCache` whose keys include
    the parameter's state.

    Args:
        max_entries (int): Entries kept (a few input sizes); least recently
            used out first; what a captured CUDA graph reads stays alive
            with the graph (:mod:`mmapt.tokenizer.cache_pins`). Defaults
            to 8.
    """

    def get(  # type: ignore[override]
            self, param: Tensor, key: Hashable, compute: Callable[[],
                                                                  Any]) -> Any:
        """``compute()``, from the cache when ``param`` and ``key`` match."""
        if (torch.is_grad_enabled() and param.requires_grad) or \
                torch.compiler.is_compiling():  # traced, not cached
            return compute()  # (and the gradient reaches the parameter)
        full_key = (key, param._version, param.device, param.dtype,
                    param.data_ptr())
        with torch.no_grad():
            return super().get(full_key, compute)
