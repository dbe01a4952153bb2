"""What every block family shares: stochastic depth, windows, the dense
attention rule and the pre-norm block around a family's attention and MLP.

A dense block runs ``block(x, ctx)`` on (B, P + H * W, C) tokens (each
image's P prefix tokens first, then its H x W grid row-major) with a
:class:`~mmapt.models.layers.context.DenseContext`; a packed block runs
``block.forward_packed(x, ctx)`` on (N, C) tokens with a
:class:`~mmapt.models.layers.context.PackedContext`. :func:`attend_dense`
is the dense side of the one attention rule both follow: global blocks
attend within each image (prefix tokens included); window blocks attend
within windows, the prefix tokens of an image among themselves.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .context import DenseContext, PackedContext

#: ``attention(tokens (B', L', C), rope (L', 2, hd) or None,
#: key_mask (B', 1, 1, L') or None) -> (B', L', C)``.
DenseAttention = Callable[[Tensor, Optional[Tensor], Optional[Tensor]], Tensor]


class SelfAttentionBase(BaseModule):
    """Base of every block family's attention module.

    A subclass attends, in its dense ``forward(x (B, L, C), ...)``, among
    the L tokens of each of B sequences (images or windows), and in
    ``forward_packed(x (N, C), groups)`` within the packed ``groups``. Tools
    recognise attention by this class (``mmapt.benchmark.flops`` counts its
    FLOPs analytically), never by a family's class name.
    """


def head_dim_of(embed_dims: int, num_heads: int) -> int:
    """Channels per head; ``embed_dims`` must divide among the heads."""
    if embed_dims % num_heads:
        raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                         f'num_heads {num_heads}')
    return embed_dims // num_heads


class DropPath(nn.Module):
    """Stochastic depth per sample (image), for dense or packed tokens.

    Args:
        drop_prob (float): Probability of dropping a sample's residual branch.
    """

    def __init__(self, drop_prob: float = 0.) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self,
                x: Tensor,
                sample_index: Optional[Tensor] = None,
                num_samples: int = 0) -> Tensor:
        """Drop ``x``'s branch per sample.

        Args:
            x (Tensor): (B, ...) dense, or (N, C) packed with ``sample_index``.
            sample_index (Tensor, optional): (N,) image of each packed token;
                packed tokens of one image are dropped together.
            num_samples (int): Number of images when packed.
        """
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1 - self.drop_prob
        if sample_index is None:
            shape = (x.shape[0], ) + (1, ) * (x.dim() - 1)
            mask = x.new_empty(shape).bernoulli_(keep)
        else:
            mask = x.new_empty(num_samples).bernoulli_(keep)
            mask = mask.index_select(0, sample_index)[:, None]
        return x * mask / keep

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


def attend_dense(attention: DenseAttention, y: Tensor, ctx: DenseContext,
                 window_size: int) -> Tensor:
    """The dense attention rule of every block family.

    Args:
        attention (Callable): The block's attention on sequences, see
            :data:`DenseAttention`.
        y (Tensor): (B, P + H * W, C) normalised tokens.
        ctx (DenseContext): Grid, prefix count and RoPE tables.
        window_size (int): The block's window side in tokens; 0 = global.

    Returns:
        Tensor: (B, P + H * W, C). Global blocks: every token of an image
        attends to every token of it. Window blocks: patch tokens attend
        within their window (padded to a multiple of the window with masked
        keys, like ViTDet), prefix tokens among themselves.
    """
    if not window_size:
        return attention(y, ctx.image_rope, None)
    num_prefix = ctx.num_prefix_tokens
    batch, _, channels = y.shape
    patches = y[:, num_prefix:].reshape(batch, *ctx.grid, channels)
    windows, key_mask, padded = window_partition(patches, window_size)
    patches = window_unpartition(
        attention(windows, ctx.window_rope, key_mask), window_size, padded,
        ctx.grid).reshape(batch, -1, channels)
    if not num_prefix:
        return patches
    prefix = attention(y[:, :num_prefix], ctx.prefix_rope, None)
    return torch.cat([prefix, patches], dim=1)


def window_partition(
        x: Tensor,
        window_size: int) -> Tuple[Tensor, Optional[Tensor], Tuple[int, int]]:
    """(B, H, W, C) -> (B * nW, ws * ws, C) windows, zero-padded.

    Returns:
        tuple: windows; (B * nW, 1, 1, ws * ws) bool key mask (None without
        padding); padded (Hp, Wp).
    """
    batch, height, width, channels = x.shape
    pad_h = (window_size - height % window_size) % window_size
    pad_w = (window_size - width % window_size) % window_size
    key_mask = None
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        valid = x.new_zeros(
            1, height + pad_h, width + pad_w, 1, dtype=torch.bool)
        valid[:, :height, :width] = True
        key_mask = _partition(valid, window_size).view(-1, 1, 1,
                                                       window_size**2)
        key_mask = key_mask.repeat(batch, 1, 1, 1)
    padded = (height + pad_h, width + pad_w)
    return _partition(x, window_size), key_mask, padded


def _partition(x: Tensor, ws: int) -> Tensor:
    batch, height, width, channels = x.shape
    x = x.view(batch, height // ws, ws, width // ws, ws, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, channels)


def window_unpartition(windows: Tensor, window_size: int,
                       padded: Tuple[int, int], size: Tuple[int,
                                                            int]) -> Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C), padding cut."""
    hp, wp = padded
    ws = window_size
    channels = windows.shape[-1]
    batch = windows.shape[0] // ((hp // ws) * (wp // ws))
    x = windows.view(batch, hp // ws, wp // ws, ws, ws, channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, channels)
    if (hp, wp) != tuple(size):
        x = x[:, :size[0], :size[1]]
    return x


class PreNormBlock(BaseModule):
    """Pre-norm block of every family, dense or packed:
    ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``, each
    branch through per-image stochastic depth.

    A family builds its own attention and MLP (and LayerScale) and hands them
    over. The submodules register in the order ``norm1, attn, norm2, mlp,
    ls1, ls2, drop_path``: the state-dict order of the official and timm
    checkpoints, which the converters and saved checkpoints rely on.

    Args:
        embed_dims (int): Channels.
        attn (SelfAttentionBase): The family's attention; its dense
            ``forward`` follows :data:`DenseAttention`.
        mlp (nn.Module): The family's MLP on (..., C) tokens.
        window_size (int): Window side in tokens; 0 means global attention.
        layer_scale (Tuple[nn.Module, nn.Module], optional): ``ls1`` and
            ``ls2``, applied to the attention and MLP branches; None: no
            scaling and no weights.
        drop_path (float): Stochastic depth rate.
        norm_eps (float): LayerNorm epsilon.
    """

    def __init__(self,
                 embed_dims: int,
                 attn: SelfAttentionBase,
                 mlp: nn.Module,
                 window_size: int = 0,
                 layer_scale: Optional[Tuple[nn.Module, nn.Module]] = None,
                 drop_path: float = 0.,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = mlp
        self.ls1, self.ls2 = layer_scale or (nn.Identity(), nn.Identity())
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, ctx: DenseContext) -> Tensor:
        """Dense path on (B, P + H * W, C) tokens (prefix first).

        Window blocks attend within windows (partial border windows padded,
        padded keys masked, like ViTDet), global blocks over the whole
        image; prefix tokens follow :func:`attend_dense`.

        Args:
            x (Tensor): (B, P + H * W, C) tokens, patch tokens row-major.
            ctx (DenseContext): Grid, prefix count and RoPE tables, shared
                by all blocks.

        Returns:
            Tensor: (B, P + H * W, C).
        """
        y = attend_dense(self.attn, self.norm1(x), ctx, self.window_size)
        x = x + self.drop_path(self.ls1(y))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

    def forward_packed(self, x: Tensor, ctx: PackedContext) -> Tensor:
        """Packed path on (N, C) tokens; norms and MLP see no padding.

        Args:
            x (Tensor): (N, C) packed tokens, each image's prefix first.
            ctx (PackedContext): The batch's attention groups, plans and
                RoPE tables and the per-token image index (per-image
                stochastic depth), shared by all blocks.

        Returns:
            Tensor: (N, C).
        """
        y = self.attn.forward_packed(
            self.norm1(x), ctx.groups(self.window_size))
        images = ctx.packed_image_index
        x = x + self.drop_path(self.ls1(y), images, ctx.num_images)
        y = self.ls2(self.mlp(self.norm2(x)))
        return x + self.drop_path(y, images, ctx.num_images)
