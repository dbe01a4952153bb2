"""APT embedding of multi-scale patches (docs/method.md section 2).

A patch of scale ``i`` (side ``p * 2**i``) is embedded as

    E(P) = ZeroLinear(Conv^(i)(base embeddings inside P)) + E(Resize_p(P))
           + pos(P)

Base patches are the plain patch embedding plus position. Everything is
computed only for the tokens that exist, with index arithmetic, one pass per
scale (never per token), and written once into the packed output:

* ``Resize_p(P)``: area resize (mean over ``2**i x 2**i`` pixel blocks, what
  average pooling the whole image would give) of only the kept patches'
  pixels, then the patch-embedding kernel as a matrix product.
* ``Conv``: one shared ``Conv2d(D, D, 2, stride 2)`` applied ``i`` times to
  the token's ``2**i x 2**i`` base embeddings. The cells are gathered in
  Morton (Z) order, so every 2 x 2 neighbourhood of every level is four
  consecutive rows: each conv level is one linear layer on a reshaped view,
  with no permute copies.
* ``ZeroLinear``: ``Linear(D, D)`` initialised to zero, so an untrained APT
  model embeds a large patch exactly as "the patch embedding of its resized
  pixels", and a plain EVA-02 checkpoint keeps working.
* ``pos(P)``: the mean of the base-grid position table over the patch's
  cells (the table average-pooled by ``2**i``, what ``PatchLayout.pool``
  computes), passed in per scale so the backbone can cache it.
"""
from functools import lru_cache
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .embed import PatchEmbed


@lru_cache(maxsize=None)
def _morton_offsets(side: int) -> Tensor:
    """(side * side, 2) (dy, dx) of a side x side block in Morton order.

    Bit ``2j + 1`` of the index is bit ``j`` of dy, bit ``2j`` bit ``j`` of
    dx: children of every 2 x 2 node come as (0,0), (0,1), (1,0), (1,1).
    """
    index = torch.arange(side * side)
    dy = torch.zeros_like(index)
    dx = torch.zeros_like(index)
    for bit in range(max(side.bit_length() - 1, 0)):
        dx |= ((index >> (2 * bit)) & 1) << bit
        dy |= ((index >> (2 * bit + 1)) & 1) << bit
    return torch.stack([dy, dx], dim=1)


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

    def forward(self, images: Tensor, base: Tensor,
                pos: Optional[List[Tensor]], layout,
                patch_embed: PatchEmbed) -> Tensor:
        """Embed every token of ``layout``, position included.

        Args:
            images (Tensor): (B, 3, H, W) normalised images.
            base (Tensor): (B, Hc, Wc, D) channels-last base patch embeddings
                (the plain model's, before position).
            pos (list[Tensor], optional): Per scale ``i``, the position table
                pooled by ``2**i``, flattened channels-last:
                ``(Hc/2**i * Wc/2**i, D)``; None for models without absolute
                positions.
            layout (PatchLayout): The token layout.
            patch_embed (PatchEmbed): The pretrained patch embedding.

        Returns:
            Tensor: (N, D) embeddings of the layout's content tokens, in
            packed order (prefix tokens are the caller's).
        """
        batch, height, width, dims = base.shape
        base_flat = base.reshape(-1, dims)
        # The dtype of "embedding + position" by torch's promotion rules:
        # under autocast the embeddings are fp16/bf16 and the position table
        # fp32, so tokens start fp32, exactly as in the dense EVA02 (whose
        # blocks then keep the residual stream in that dtype).
        dtype = base.dtype if pos is None else torch.promote_types(
            base.dtype, pos[0].dtype)
        tokens = base.new_empty(layout.num_tokens, dims, dtype=dtype)
        for scale in range(layout.num_scales):
            index = (layout.scale_index == scale).nonzero(as_tuple=True)[0]
            # While training, empty scales still run (on zero tokens) so the
            # APT layers always get a (zero) gradient: DDP then needs no
            # find_unused_parameters when a batch merges nothing.
            if index.numel() == 0 and not (self.training and scale > 0
                                           and torch.is_grad_enabled()):
                continue
            image = layout.image_index[index]
            row, col = layout.row[index], layout.col[index]
            if scale == 0:
                value = base_flat.index_select(
                    0, (image * height + row) * width + col)
            else:
                value = self._resized_embed(images, image, row, col, scale,
                                            patch_embed)
                value = value + self.zero_linear(
                    self._aggregate(base_flat, image, row, col, scale, height,
                                    width))
            if pos is not None:
                pos_index = (row >> scale) * (width >> scale) + (col >> scale)
                value = value + pos[scale].index_select(0, pos_index)
            # Written once per token into a fresh buffer (no full copies).
            # The cast is a no-op unless autocast made the large-patch
            # branch another dtype than the base embedding.
            tokens.index_copy_(0, index, value.to(dtype))
        return tokens

    @staticmethod
    def _resized_embed(images: Tensor, image: Tensor, row: Tensor, col: Tensor,
                       scale: int, patch_embed: PatchEmbed) -> Tensor:
        """Patch embedding of the kept patches, area-resized to p x p."""
        factor = 1 << scale
        p = patch_embed.patch_size
        side = p * factor
        batch, chans, height, width = images.shape
        blocks = images.view(batch, chans, height // side, side, width // side,
                             side)
        # Advanced indices on dims 0, 2, 4 -> (n, chans, side, side): only
        # the kept patches' pixels are read.
        pixels = blocks[image, :, row >> scale, :, col >> scale, :]
        resized = F.avg_pool2d(pixels, factor)  # (n, chans, p, p)
        return patch_embed.embed_patches(resized.flatten(1))

    def _aggregate(self, base_flat: Tensor, image: Tensor, row: Tensor,
                   col: Tensor, scale: int, height: int, width: int) -> Tensor:
        """Shared 2x2 stride-2 conv applied ``scale`` times per token."""
        num, dims = image.numel(), base_flat.shape[1]
        offsets = _morton_offsets(1 << scale).to(image.device)
        cells = (image[:, None] * height + row[:, None] + offsets[:, 0]) \
            * width + col[:, None] + offsets[:, 1]  # (n, s * s)
        x = base_flat.index_select(0, cells.reshape(-1))
        # Conv weight (out, in, ky, kx) -> (out, ky, kx, in): the order of a
        # Morton quadruple of channels-last cells.
        weight = self.aggregate.weight.permute(0, 2, 3, 1).reshape(dims, -1)
        for _ in range(scale):
            x = F.linear(x.view(-1, 4 * dims), weight, self.aggregate.bias)
        return x.view(num, dims)
