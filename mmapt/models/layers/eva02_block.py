"""EVA-02 transformer block, dense (B, P + L, C) or packed (N, C).

Parameter names follow the official EVA-02 tiny/small checkpoints (fused
``qkv`` + ``q_bias``/``v_bias``, ``mlp.w12``/``mlp.w3``), with timm's short
names for the optional norms (``attn.norm``, ``mlp.norm``), so official and
timm weights load through a small key mapping (``mmapt.converters``).

Both paths run the same modules in the same order; only the token layout and
the attention call differ. With every APT token base-sized the packed path
therefore reproduces the dense path to float rounding.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .common import PreNormBlock, SelfAttentionBase, head_dim_of
from .context import AttentionGroups
from .rope import apply_rope


class EVA02Attention(SelfAttentionBase):
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
        self.num_heads = num_heads
        self.head_dim = head_dim_of(embed_dims, num_heads)
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
        # One rotation call for q and k together; the (L, 2, hd) table
        # broadcasts over the leading batch dims and the (q|k, heads) dims.
        # The unrotated q|k are not needed again, so at inference they are
        # rotated in place in the fresh projection output.
        qk = apply_rope(qkv[..., :2, :, :], rope[:, None, None], inplace=True)
        return qk, qkv[..., 2, :, :]

    def forward(self,
                x: Tensor,
                rope: Tensor,
                key_mask: Optional[Tensor] = None) -> Tensor:
        """Dense path (a :data:`~mmapt.models.layers.common.DenseAttention`).

        Args:
            x (Tensor): (B, L, C) tokens of B sequences (images or windows).
            rope (Tensor): (L, 2, head_dim) RoPE table (``apply_rope``).
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
                with their plan and per-token RoPE table.

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


class EVA02Block(PreNormBlock):
    """Pre-norm EVA-02 block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``
    (:class:`~mmapt.models.layers.common.PreNormBlock`, no LayerScale).

    Attention carries RoPE: window blocks rotate by window-relative
    positions, global blocks by those of the nominal grid; prefix tokens
    (class token) get none.

    Args:
        embed_dims (int): Channels.
        num_heads (int): Attention heads.
        mlp_hidden_dims (int): SwiGLU hidden channels.
        scale_mlp (bool): LayerNorm inside the MLP.
        attn_inner_norm (bool): LayerNorm inside attention.
        norm_eps (float): LayerNorm epsilon (all norms).
        **kwargs: ``window_size`` and ``drop_path`` of
            :class:`~mmapt.models.layers.common.PreNormBlock`.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_hidden_dims: int,
                 scale_mlp: bool = False,
                 attn_inner_norm: bool = False,
                 norm_eps: float = 1e-6,
                 **kwargs) -> None:
        super().__init__(
            embed_dims,
            EVA02Attention(embed_dims, num_heads, attn_inner_norm, norm_eps),
            SwiGLU(embed_dims, mlp_hidden_dims, scale_mlp, norm_eps),
            norm_eps=norm_eps,
            **kwargs)
