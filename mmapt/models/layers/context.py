"""What every block needs about a batch, built once per forward: the
DenseContext of dense (B, P + L, C) tokens and the PackedContext of packed
(N, C) tokens."""
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor

from mmapt.tokenizer import PatchLayout
from .attention import AttentionObservers, VarlenPlan, varlen_attention


@dataclass
class AttentionGroups:
    """One grouping of the packed tokens for attention (windows or images).

    Attributes:
        cu_seqlens (Tensor): (G + 1,) int32 group offsets.
        max_seqlen (int): Longest group.
        plan (VarlenPlan | StaticPlan): The attention plan of
            ``cu_seqlens``, shared by all blocks that use this grouping (a
            :class:`StaticPlan` in static-shape mode: its ``kernel`` says
            which kernel ran).
        rope (Tensor, optional): (N_packed, 2, head_dim) per-token
            RoPE table for this grouping (identity rows for prefix tokens);
            None for models without RoPE.
        backend (str): The backbone's attention backend for this forward
            (``'auto'``, ``'varlen'`` or ``'padded'``).
        observers (tuple[Callable]): The backbone's attention observers,
            told of every call (``fn(kernel, q, cu_seqlens)``).
    """

    cu_seqlens: Tensor
    max_seqlen: int
    plan: VarlenPlan
    rope: Optional[Tensor] = None
    backend: str = 'auto'
    observers: AttentionObservers = ()

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention within the groups of packed (N, heads, head_dim) q, k,
        v (RoPE, if any, already applied)."""
        return varlen_attention(
            q,
            k,
            v,
            self.cu_seqlens,
            self.max_seqlen,
            plan=self.plan,
            backend=self.backend,
            observers=self.observers)


@dataclass
class PackedContext:
    """Passed whole to ``block.forward_packed(x, ctx)``.

    Attributes:
        layout (PatchLayout): The token layout of the batch.
        window (AttentionGroups): Groups of window blocks: (image, window)
            pairs, plus one group of prefix tokens per image. Equal to
            ``image`` when the model has no windows.
        image (AttentionGroups): Groups of global blocks: whole images,
            prefix tokens included.
        packed_image_index (Tensor): (N_packed,) image of every packed token
            (prefix tokens included), for per-image stochastic depth; not
            ``PatchLayout.image_index``, which covers content tokens only.
        num_images (int): Batch size.
        num_prefix_tokens (int): Prefix tokens at the start of each image.
    """

    layout: PatchLayout
    window: AttentionGroups
    image: AttentionGroups
    packed_image_index: Tensor
    num_images: int
    num_prefix_tokens: int = 0

    def groups(self, window_size: int) -> AttentionGroups:
        """The grouping of a block with this ``window_size`` (0 = global)."""
        return self.window if window_size else self.image


@dataclass
class DenseContext:
    """Passed whole to every dense ``block(x, ctx)``.

    The tokens are (B, P + H * W, C): each image's P prefix tokens, then its
    H x W grid, row-major.

    Attributes:
        grid (tuple[int, int]): (H, W) of the patch tokens.
        num_prefix_tokens (int): P.
        image_rope (Tensor, optional): (P + H * W, 2, head_dim) RoPE
            table of global blocks (identity rows for the prefix tokens);
            None for models without RoPE.
        window_rope (Tensor, optional): (ws * ws, 2, head_dim)
            window-relative table of window blocks; None without RoPE or
            windows.
        prefix_rope (Tensor, optional): (P, 2, head_dim) identity rows, for
            the prefix tokens' own group in window blocks.
    """

    grid: Tuple[int, int]
    num_prefix_tokens: int = 0
    image_rope: Optional[Tensor] = None
    window_rope: Optional[Tensor] = None
    prefix_rope: Optional[Tensor] = None
