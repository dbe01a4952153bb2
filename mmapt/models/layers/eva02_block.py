"""EVA-02 transformer block, runnable dense (B, L, C) or packed (N, C).

Parameter names follow the official EVA-02 tiny/small checkpoints (fused
``qkv`` + ``q_bias``/``v_bias``, ``mlp.w12``/``mlp.w3``), with timm's short
names for the optional norms (``attn.norm``, ``mlp.norm``), so official and
timm weights load through a small key mapping (``mmapt.utils``).

Both paths run the same modules in the same order; only the token layout and
the attention call differ. With every APT token base-sized the packed path
therefore reproduces the dense path to float rounding.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .context import AttentionGroups, PackedContext
from .rope import apply_rope


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


class EVA02Attention(BaseModule):
    """Multi-head self-attention with 2D RoPE, q/v biases and no k bias.

    Args:
        embed_dims (int): Channels.
        num_heads (int): Heads.
        inner_norm (bool): LayerNorm on the attention output before ``proj``
            (EVA-02 ``inner_attn_ln``, timm ``scale_attn_inner``).
        norm_eps (float): LayerNorm epsilon.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 inner_norm: bool = False,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        self.num_heads = num_heads
        self.head_dim = embed_dims // num_heads
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dims))
        self.v_bias = nn.Parameter(torch.zeros(embed_dims))
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) \
            if inner_norm else nn.Identity()
        self.proj = nn.Linear(embed_dims, embed_dims)

    def _qkv(self, x: Tensor, rope: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., L, C) -> q|k (..., L, 2, heads, hd) with RoPE, v (..., L,
        heads, hd)."""
        bias = torch.cat(
            [self.q_bias,
             torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        qkv = qkv.unflatten(-1, (3, self.num_heads, self.head_dim))
        # One rotation call for q and k together; the (L, hd / 2) table
        # broadcasts over the leading batch dims and the (q|k, heads) dims.
        qk = apply_rope(qkv[..., :2, :, :], rope[:, None, None])
        return qk, qkv[..., 2, :, :]

    def forward(self,
                x: Tensor,
                rope: Tensor,
                key_mask: Optional[Tensor] = None) -> Tensor:
        """Dense path.

        Args:
            x (Tensor): (B, L, C) tokens of B sequences (images or windows).
            rope (Tensor): (L, head_dim / 2) complex RoPE table.
            key_mask (Tensor, optional): (B, 1, 1, L) bool, False for padded
                keys.

        Returns:
            Tensor: (B, L, C).
        """
        batch, length, channels = x.shape
        qk, v = self._qkv(x, rope)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, L, hd)
        out = F.scaled_dot_product_attention(
            q, k, v.transpose(1, 2), attn_mask=key_mask)
        out = out.transpose(1, 2).reshape(batch, length, channels)
        return self.proj(self.norm(out))

    def forward_packed(self, x: Tensor, groups: AttentionGroups) -> Tensor:
        """Packed path: (N, C) tokens, attention within ``groups``.

        Args:
            x (Tensor): (N, C) packed tokens.
            groups (AttentionGroups): The attention groups (window or image)
                with their plan and per-token complex RoPE table.

        Returns:
            Tensor: (N, C).
        """
        num_tokens, channels = x.shape
        qk, v = self._qkv(x, groups.rope)
        q, k = qk.unbind(1)  # (N, heads, hd)
        out = groups.attend(q, k, v)
        return self.proj(self.norm(out.reshape(num_tokens, channels)))


class SwiGLU(BaseModule):
    """EVA-02 SwiGLU MLP: ``w3(norm(silu(x @ w1) * (x @ w2)))``.

    ``w12`` holds ``cat(w1, w2)`` (gate first), the official fused layout.

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
        scale_mlp (bool): LayerNorm on the hidden features (base/large).
        norm_eps (float): LayerNorm epsilon.
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 scale_mlp: bool = False,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.w12 = nn.Linear(embed_dims, hidden_dims * 2)
        self.norm = nn.LayerNorm(hidden_dims, eps=norm_eps) \
            if scale_mlp else nn.Identity()
        self.w3 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(self.norm(F.silu(gate) * value))


class EVA02Block(BaseModule):
    """Pre-norm EVA-02 block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``.

    Args:
        embed_dims (int): Channels.
        num_heads (int): Attention heads.
        mlp_hidden_dims (int): SwiGLU hidden channels.
        window_size (int): Window side in tokens for the dense path; 0 means
            global attention.
        scale_mlp (bool): LayerNorm inside the MLP.
        attn_inner_norm (bool): LayerNorm inside attention.
        drop_path (float): Stochastic depth rate.
        norm_eps (float): LayerNorm epsilon.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_hidden_dims: int,
                 window_size: int = 0,
                 scale_mlp: bool = False,
                 attn_inner_norm: bool = False,
                 drop_path: float = 0.,
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = EVA02Attention(embed_dims, num_heads, attn_inner_norm,
                                   norm_eps)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = SwiGLU(embed_dims, mlp_hidden_dims, scale_mlp, norm_eps)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        x: Tensor,
        rope: Tensor,
        prefix: Optional[Tensor] = None
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Dense path on a (B, H, W, C) token map, and optional prefix tokens.

        Window blocks pad the map to a multiple of the window (like ViTDet),
        attend within windows with window-relative RoPE and mask the padded
        keys; global blocks attend over the whole image. Prefix tokens
        (class token) get no RoPE; they attend with the whole image in global
        blocks and among themselves in window blocks.

        Args:
            x (Tensor): (B, H, W, C).
            rope (Tensor): Complex RoPE table of the window grid (window
                blocks) or of the H x W grid (global blocks).
            prefix (Tensor, optional): (B, P, C) prefix tokens.

        Returns:
            Tensor | tuple[Tensor, Tensor]: The new map, and the new prefix
            tokens when ``prefix`` is given.
        """
        batch, height, width, channels = x.shape
        num_prefix = 0 if prefix is None else prefix.shape[1]
        seq = x.reshape(batch, height * width, channels)
        if num_prefix:
            seq = torch.cat([prefix, seq], dim=1)
        y = self.norm1(seq)
        if self.window_size > 0:
            grid = self._window_attention(
                y[:, num_prefix:].view(batch, height, width, channels), rope)
            grid = grid.reshape(batch, height * width, channels)
            if num_prefix:  # the prefix tokens: a group of their own
                y = torch.cat([
                    self.attn(y[:, :num_prefix],
                              _identity_rope(rope, num_prefix)), grid
                ],
                              dim=1)
            else:
                y = grid
        else:
            if num_prefix:
                rope = torch.cat([_identity_rope(rope, num_prefix), rope])
            y = self.attn(y, rope)
        seq = seq + self.drop_path(y)
        seq = seq + self.drop_path(self.mlp(self.norm2(seq)))
        out = seq[:, num_prefix:].reshape(batch, height, width, channels)
        return out if prefix is None else (out, seq[:, :num_prefix])

    def _window_attention(self, y: Tensor, rope: Tensor) -> Tensor:
        """Attention within windows of a normalised (B, H, W, C) map."""
        height, width = y.shape[1:3]
        y, key_mask, padded = window_partition(y, self.window_size)
        y = self.attn(y, rope, key_mask)
        return window_unpartition(y, self.window_size, padded, (height, width))

    def forward_packed(self, x: Tensor, ctx: PackedContext) -> Tensor:
        """Packed path on (N, C) tokens; norms and MLP see no padding.

        Args:
            x (Tensor): (N, C) packed tokens.
            ctx (PackedContext): The batch's groups, attention plans, RoPE
                tables and per-token image index (for per-image stochastic
                depth), shared by all blocks.
        """
        groups = ctx.groups(self.window_size)
        y = self.attn.forward_packed(self.norm1(x), groups)
        x = x + self.drop_path(y, ctx.image_index, ctx.num_images)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y, ctx.image_index, ctx.num_images)


def _identity_rope(rope: Tensor, rows: int) -> Tensor:
    """``rows`` RoPE rows that rotate nothing (1 + 0i), for prefix tokens."""
    return rope.new_ones(rows, rope.shape[-1])


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
