"""APT embedding of multi-scale patches (docs/method.md section 2).

A patch of scale ``i`` (side ``p * 2**i``) is embedded as

    E(P) = ZeroLinear(Conv^(i)(base embeddings inside P)) + E(Resize_p(P))
           + pos(P)

Base patches are the plain patch embedding plus position. Every scale is
computed densely, as a map over the whole image (a scale-``i`` map has
``4**-i`` of the base cells, so all larger scales together cost about a
third of the base patch embedding, plus the aggregation convs), and the
packed tokens are then **one gather** from the stacked maps: no per-scale
selection, no data-dependent shapes, the same ops for every image.

* ``Resize_p(P)``: area resize (what average pooling the whole image by
  ``2**i`` gives, block for block), then the patch-embedding kernel.
* ``Conv``: one shared ``Conv2d(D, D, 2, stride 2)``; level ``i`` of the
  pyramid is the conv of level ``i - 1``, so a scale-``i`` patch (aligned to
  its own size) reads exactly the conv applied ``i`` times to its cells.
* ``ZeroLinear``: ``Linear(D, D)`` initialised to zero, so an untrained APT
  model embeds a large patch exactly as "the patch embedding of its resized
  pixels", and a plain EVA-02 checkpoint keeps working.
* ``pos(P)``: the mean of the base-grid position table over the patch's
  cells (the table average-pooled by ``2**i``), passed in per scale so the
  backbone can cache it.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .embed import ParamCache, PatchEmbed


class APTEmbed(BaseModule):
    """The APT-only layers and the multi-scale token embedding.

    Args:
        embed_dims (int): Channels.
    """

    def __init__(self, embed_dims: int) -> None:
        super().__init__()
        self.aggregate = nn.Conv2d(embed_dims, embed_dims, 2, stride=2)
        self.zero_linear = nn.Linear(embed_dims, embed_dims)
        nn.init.zeros_(self.zero_linear.weight)
        nn.init.zeros_(self.zero_linear.bias)
        self._kernels = ParamCache()

    def forward(self,
                images: Tensor,
                base: Tensor,
                pos: Optional[List[Tensor]],
                layout,
                patch_embed: PatchEmbed,
                prefix: Optional[Tensor] = None) -> Tensor:
        """Embed every packed token of ``layout``, position included.

        Args:
            images (Tensor): (B, 3, H, W) normalised images.
            base (Tensor): (B, Hc, Wc, D) channels-last base patch embeddings
                (the plain model's, before position).
            pos (list[Tensor], optional): Position tables per scale: for
                scale 0 the (Hc, Wc, D) channels-last map, for scale ``i >
                0`` the (1, D, Hc / 2**i, Wc / 2**i) map average-pooled by
                ``2**i``; None for models without absolute positions.
            layout (PatchLayout): The token layout.
            patch_embed (PatchEmbed): The pretrained patch embedding.
            prefix (Tensor, optional): (B, P, D) prefix tokens (positions
                included) when the layout has ``P > 0``.

        Returns:
            Tensor: (``layout.num_packed``, D) packed tokens: each image's
            prefix tokens, then its content tokens (then padding tokens in
            static mode).
        """
        batch, height, width, dims = base.shape
        # The dtype of "embedding + position" by torch's promotion rules:
        # under autocast the embeddings are fp16/bf16 and the position table
        # fp32, so tokens start fp32, exactly as in the dense EVA02 (whose
        # blocks then keep the residual stream in that dtype).
        scale0 = base if pos is None else base + pos[0]
        dtype = scale0.dtype
        rows = [scale0.reshape(-1, dims)]
        if layout.num_prefix_tokens:  # the table's first rows
            rows.insert(0, prefix.reshape(-1, dims))
        counts = layout.host_scale_counts
        # While training, empty scales still run so the APT layers always
        # get a (zero) gradient: DDP then needs no find_unused_parameters
        # when a batch merges nothing. At inference a scale no token uses
        # is skipped (exact mode knows the counts; static mode runs all).
        needed = [
            counts is None or counts[s] > 0
            or (self.training and torch.is_grad_enabled())
            for s in range(layout.num_scales)
        ]
        last = max(s for s in range(layout.num_scales) if s == 0 or needed[s])
        level = base.permute(0, 3, 1, 2)  # channels-last memory, a view
        # Both as 1 x 1 conv kernels (cached at inference).
        zero_weight = self._kernels.get(
            self.zero_linear.weight, 'zero_linear',
            lambda: self.zero_linear.weight.view(dims, dims, 1, 1))
        patch_weight = self._kernels.get(
            patch_embed.proj.weight, 'patch_embed',
            lambda: patch_embed.proj.weight.view(dims, -1, 1, 1))
        for scale in range(1, last + 1):
            # Every level of the conv pyramid is needed for the next one.
            level = self.aggregate(level)
            rows_s, cols_s = height >> scale, width >> scale
            if not needed[scale]:
                rows.append(
                    base.new_zeros(1, dims,
                                   dtype=dtype).expand(batch * rows_s * cols_s,
                                                       dims))
                continue
            value = self._resized_embed(images, scale, patch_embed,
                                        patch_weight) + \
                F.conv2d(level, zero_weight, self.zero_linear.bias)
            if pos is not None:
                value = value + pos[scale]
            rows.append(value.permute(0, 2, 3, 1).reshape(-1, dims))
        # One gather for every packed token (cat promotes to ``dtype``:
        # under autocast the large-patch branch may be fp16/bf16).
        table = torch.cat(rows).to(dtype)
        tokens = table.index_select(0, layout.embed_index)
        if layout.overflow is not None:
            # Static mode, batch larger than pack_size: tokens were dropped,
            # so the outputs would be silently wrong. NaN makes it loud.
            tokens = tokens.masked_fill(layout.overflow, float('nan'))
        return tokens

    @staticmethod
    def _resized_embed(images: Tensor, scale: int, patch_embed: PatchEmbed,
                       patch_weight: Tensor) -> Tensor:
        """(B, D, Hc / 2**i, Wc / 2**i) patch embedding of the image area-
        resized by ``2**scale`` (every scale-``i`` patch resized to p x p).

        The p x p tiles are unshuffled into channels (c, dy, dx: the order
        of the kernel's weights) and embedded by a 1 x 1 conv, 1.6x faster
        on CPU than the strided p x p conv.
        """
        resized = F.avg_pool2d(images, 1 << scale)
        tiles = F.pixel_unshuffle(resized, patch_embed.patch_size)
        return F.conv2d(tiles, patch_weight, patch_embed.proj.bias)
