"""Plain ViT block (DINOv2 / timm ``VisionTransformer`` style).

Pre-norm block with fused, biased ``qkv``, a GELU MLP and optional
LayerScale: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``.
Parameter names are timm's and DINOv2's (``attn.qkv``, ``attn.proj``,
``ls1.gamma``, ``mlp.fc1``, ``mlp.fc2``), so both checkpoints load with
hardly any renaming (``mmapt.converters.vit_convert``).

Dense sequences start with P prefix tokens (class and register tokens)
followed by an ``H x W`` grid of patch tokens, and follow the attention
rule of every block family (:func:`~mmapt.models.layers.common.attend_dense`):
in global blocks every token attends to every token of its image; in window
blocks the patch tokens attend within their window and the prefix tokens
among themselves. Every attention group is then a contiguous slice of the
packed APT sequence (prefix tokens first), and the rule is the same dense
and packed.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .common import PreNormBlock, SelfAttentionBase, head_dim_of
from .context import AttentionGroups


class LayerScale(nn.Module):
    """Per-channel learnt scale ``x * gamma`` (CaiT / DINOv2).

    Args:
        embed_dims (int): Channels.
        init_value (float): Initial value of every ``gamma`` entry.
    """

    def __init__(self, embed_dims: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((embed_dims, ), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class ViTAttention(SelfAttentionBase):
    """Multi-head self-attention with a fused, biased qkv projection.

    Args:
        embed_dims (int): Channels.
        num_heads (int): Heads; the softmax scale is ``head_dim ** -0.5``.
    """

    def __init__(self, embed_dims: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim_of(embed_dims, num_heads)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self,
                x: Tensor,
                rope: Optional[Tensor] = None,
                key_mask: Optional[Tensor] = None) -> Tensor:
        """Dense path (a :data:`~mmapt.models.layers.common.DenseAttention`):
        (B, L, C) sequences -> (B, L, C).

        Args:
            x (Tensor): B sequences (images or windows) of L tokens.
            rope (Tensor, optional): Unused: this family has no RoPE (the
                dense context's tables are None for it).
            key_mask (Tensor, optional): (B, 1, 1, L) bool, False for padded
                keys.
        """
        batch, length, channels = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, channels))

    def forward_packed(self, x: Tensor, groups: AttentionGroups) -> Tensor:
        """Packed path: (N, C) tokens, attention within ``groups``.

        Args:
            x (Tensor): (N, C) packed tokens.
            groups (AttentionGroups): The attention groups (window or image)
                with their plan (no RoPE here).
        """
        num_tokens, channels = x.shape
        q, k, v = self.qkv(x).view(num_tokens, 3, self.num_heads,
                                   self.head_dim).unbind(1)
        return self.proj(groups.attend(q, k, v).reshape(num_tokens, channels))


class ViTMlp(BaseModule):
    """``fc2(gelu(fc1(x)))`` (exact GELU, as timm and DINOv2).

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Hidden channels.
    """

    def __init__(self, embed_dims: int, hidden_dims: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(PreNormBlock):
    """Pre-norm ViT block with optional LayerScale, dense or packed
    (:class:`~mmapt.models.layers.common.PreNormBlock`; no RoPE).

    Args:
        embed_dims (int): Channels.
        num_heads (int): Attention heads.
        mlp_hidden_dims (int): MLP hidden channels.
        layer_scale_init (float, optional): Initial LayerScale value; None
            builds no LayerScale (no ``ls1``/``ls2`` weights).
        **kwargs: ``window_size``, ``drop_path`` and ``norm_eps`` of
            :class:`~mmapt.models.layers.common.PreNormBlock`.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_hidden_dims: int,
                 layer_scale_init: Optional[float] = 1e-5,
                 **kwargs) -> None:
        layer_scale = None if layer_scale_init is None else (
            LayerScale(embed_dims, layer_scale_init),
            LayerScale(embed_dims, layer_scale_init))
        super().__init__(
            embed_dims,
            ViTAttention(embed_dims, num_heads),
            ViTMlp(embed_dims, mlp_hidden_dims),
            layer_scale=layer_scale,
            **kwargs)
