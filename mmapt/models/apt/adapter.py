"""APTAdapter: all APT logic a plain ViT backbone needs, in one place.

A backbone ("host") holds one adapter and hands its forward to it. The
adapter tokenizes the images, embeds the multi-scale patches, builds the
packed context, runs the host's blocks on the packed tokens and unpacks the
requested outputs to dense maps. It asks the host only for:

* ``patch_size``, ``embed_dims``, ``window_size`` (0 = none),
  ``out_indices``, ``with_cp``, ``training``;
* ``patch_embed``: a :class:`~mmapt.models.layers.PatchEmbed`;
* ``pos_embed`` (the parameter the position map derives from, or None) and
  ``position_map(grid) -> (1, C, rows, cols)`` (absolute positions at the
  base grid; not called when ``pos_embed`` is None);
* ``rope``: a callable ``rope(coords (N, 2), grid_len) -> (N, hd / 2)``
  complex table (``RotaryEmbedding2D``), or None for models without RoPE;
* ``num_prefix_tokens`` and ``prefix_tokens(batch) -> (B, P, C)`` (class /
  register tokens, their positions included) when it is > 0;
* ``blocks``: modules with ``window_size`` and ``forward_packed(x, ctx)``;
* ``nominal_grid(grid)``: the grid positions are defined on (global RoPE
  is evaluated on it, see ``EVA02.nominal_grid``);
* ``_notify_tokens(tokens, baseline)`` (``TokenObservable``): called once
  per forward with the token counts.

The adapter registers the APT layers on the host as ``host.apt_embed`` so
checkpoint keys stay ``apt_embed.*``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmapt.tokenizer import PatchLayout, PatchTokenizer
from mmapt.utils.stages import forward_stage
from ..layers import APTEmbed, ParamCache, build_plans
from .context import AttentionGroups, PackedContext


class APTAdapter:
    """Adaptive Patch Transformer tokens for a plain ViT backbone.

    Not an ``nn.Module``: it holds no weights of its own (the APT layers are
    registered on the host), only the tokenizer and a position-table cache.

    Args:
        host (nn.Module): The backbone (see the module docstring for what it
            must provide).
        thresholds (Sequence[float]): Entropy threshold per scale above the
            base one, smallest first; -1 disables a scale.
        entropy_bins (int): Histogram bins of the entropy.
        mean (Sequence[float]): RGB mean the images were normalised with.
        std (Sequence[float]): RGB std the images were normalised with.
        **budget: ``scorer``, ``token_budget``, ``keep_ratio``,
            ``threshold_floor`` of :class:`~mmapt.tokenizer.PatchTokenizer`.
    """

    def __init__(self, host: nn.Module, thresholds: Sequence[float],
                 entropy_bins: int, mean: Sequence[float],
                 std: Sequence[float], **budget) -> None:
        self.host = host
        self.tokenizer = PatchTokenizer(
            patch_size=host.patch_size,
            thresholds=tuple(thresholds),
            entropy_bins=entropy_bins,
            mean=tuple(mean),
            std=tuple(std),
            window_size=host.window_size or None,
            num_prefix_tokens=host.num_prefix_tokens,
            **budget)
        host.apt_embed = APTEmbed(host.embed_dims)
        self._tables = ParamCache()

    def check_input_size(self, height: int, width: int) -> None:
        """ValueError naming the fix when the images cannot be tokenized."""
        self.tokenizer.check_input_size(height, width)

    # ---------------------------------------------------------------- stages
    def tokenize(self,
                 x: Tensor,
                 importance: Optional[Tensor] = None) -> PatchLayout:
        """Images (B, 3, H, W) -> :class:`PatchLayout` (no gradients)."""
        return self.tokenizer(x, importance)

    def position_tables(self, grid: Tuple[int, int],
                        num_scales: int) -> Optional[List[Tensor]]:
        """Per scale ``i``, the position map average-pooled by ``2**i``
        (= ``PatchLayout.pool`` for a token of that scale), flattened
        channels-last ``(rows_i * cols_i, C)``; None without absolute
        positions. Cached at inference."""
        host = self.host
        if host.pos_embed is None:
            return None

        def compute() -> List[Tensor]:
            pos = host.position_map(grid)
            return [(pos if scale == 0 else F.avg_pool2d(
                pos, 1 << scale))[0].permute(1, 2,
                                             0).reshape(-1, host.embed_dims)
                    for scale in range(num_scales)]

        return self._tables.get(host.pos_embed, (tuple(grid), num_scales),
                                compute)

    def embed(self, x: Tensor, layout: PatchLayout) -> Tensor:
        """Packed token embeddings (``layout.num_packed``, C): each image's
        prefix tokens, then its content tokens, positions included."""
        host = self.host
        pos = self.position_tables(layout.grid_size, layout.num_scales)
        content = host.apt_embed(x, host.patch_embed(x), pos, layout,
                                 host.patch_embed)
        if not layout.num_prefix_tokens:
            return content
        prefix = host.prefix_tokens(layout.batch_size)
        tokens = content.new_empty(layout.num_packed, content.shape[1])
        tokens.index_copy_(0, layout.content_index, content)
        return tokens.index_copy_(0, layout.prefix_index,
                                  prefix.reshape(-1, content.shape[1]))

    def packed_context(self, layout: PatchLayout) -> PackedContext:
        """Attention groups, their plans and RoPE tables, for all blocks."""
        window_plan, image_plan = build_plans(
            (layout.cu_seqlens_window, layout.max_seqlen_window),
            (layout.cu_seqlens_image, layout.max_seqlen_image))
        window_rope = image_rope = None
        if self.host.rope is not None:
            image_rope, window_rope = self._rope_tables(layout)
        return PackedContext(
            layout=layout,
            window=AttentionGroups(layout.cu_seqlens_window,
                                   layout.max_seqlen_window, window_plan,
                                   window_rope),
            image=AttentionGroups(layout.cu_seqlens_image,
                                  layout.max_seqlen_image, image_plan,
                                  image_rope),
            image_index=layout.packed_image_index,
            num_images=layout.batch_size,
            num_prefix_tokens=layout.num_prefix_tokens)

    def _rope_tables(self, layout: PatchLayout) -> Tuple[Tensor, Tensor]:
        """Global and window RoPE tables of the packed tokens: at token
        centres, window-relative in window blocks; identity (no rotation)
        for prefix tokens."""
        rope = self.host.rope
        centers = layout.centers()
        image_rope = rope(centers, self.host.nominal_grid(layout.grid_size))
        window_rope = image_rope
        if layout.window_size is not None:
            ws = layout.window_size
            local = centers - layout.window_origin().to(centers.dtype)
            window_rope = rope(local, (ws, ws))
        if layout.num_prefix_tokens:
            image_rope, window_rope = (
                self._with_prefix_rows(t, layout)
                for t in (image_rope, window_rope))
        return image_rope, window_rope

    @staticmethod
    def _with_prefix_rows(table: Tensor, layout: PatchLayout) -> Tensor:
        # cos + i sin = 1 + 0i rotates nothing: exact, no branch per block.
        full = table.new_ones(layout.num_packed, table.shape[1])
        return full.index_copy_(0, layout.content_index, table)

    def forward_blocks(self, tokens: Tensor,
                       ctx: PackedContext) -> List[Tensor]:
        """Run the host's blocks on packed tokens; packed outputs in
        ``out_indices`` order."""
        host = self.host
        wanted = set(host.out_indices)
        outs = {}
        for i, block in enumerate(host.blocks):
            if host.with_cp and host.training and tokens.requires_grad:
                tokens = checkpoint(
                    block.forward_packed, tokens, ctx, use_reentrant=False)
            else:
                tokens = block.forward_packed(tokens, ctx)
            if i in wanted:
                outs[i] = tokens
        return [outs[i] for i in host.out_indices]

    def report_tokens(self, layout: PatchLayout) -> None:
        """Publish the per-image token counts of this forward (prefix tokens
        not counted) on the host."""
        tokens = layout.tokens_per_image
        self.host._notify_tokens(
            tokens, torch.full_like(tokens, layout.baseline_tokens))

    def __call__(self,
                 x: Tensor,
                 importance: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index;
        ``importance`` (B, H, W): maps for the ``importance`` scorer."""
        self.host.check_input_size(*x.shape[2:])
        with forward_stage('tokenizer'):
            layout = self.tokenize(x, importance)
        with forward_stage('embedding'):
            tokens = self.embed(x, layout)
        with forward_stage('context'):
            ctx = self.packed_context(layout)
        with forward_stage('blocks'):
            outs = self.forward_blocks(tokens, ctx)
        with forward_stage('unpack'):
            self.report_tokens(layout)
            return tuple(layout.unpack(t).contiguous() for t in outs)
