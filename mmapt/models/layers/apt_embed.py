"""APT embedding of multi-scale patches (apt-reference section 2).

A patch of scale ``i`` (side ``p * 2**i``) is embedded as

    E(P) = ZeroLinear(Conv^(i)(base embeddings inside P)) + E(Resize_p(P))

plus its pooled absolute position (added by the backbone). Base patches are
the plain patch embedding. Everything is computed only for the tokens that
exist, with index arithmetic, one pass per scale (never per token):

* ``Resize_p(P)``: the image average-pooled by ``2**i`` (area resize), cut
  into p x p tiles; only the kept tiles are gathered and embedded (a matrix
  product with the patch-embedding kernel).
* ``Conv``: one shared ``Conv2d(D, D, 2, stride 2)`` applied ``i`` times to
  the token's ``2**i x 2**i`` base embeddings, run as a linear layer over
  2 x 2 neighbourhoods (same weights, cheaper than conv2d on tiny maps).
* ``ZeroLinear``: ``Linear(D, D)`` initialised to zero, so an untrained APT
  model embeds a large patch exactly as "the patch embedding of its resized
  pixels", and a plain EVA-02 checkpoint keeps working.
"""
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from .embed import PatchEmbed


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

    def forward(self, images: Tensor, base: Tensor, layout,
                patch_embed: PatchEmbed) -> Tensor:
        """Embed every token of ``layout`` (position not included).

        Args:
            images (Tensor): (B, 3, H, W) normalised images.
            base (Tensor): (B, Hc, Wc, D) channels-last base patch
                embeddings of the images (the plain model's, before
                position).
            layout (PatchLayout): The token layout.
            patch_embed (PatchEmbed): The pretrained patch embedding.

        Returns:
            Tensor: (N, D) packed token embeddings.
        """
        batch, height, width, dims = base.shape
        base_flat = base.reshape(-1, dims)
        # Every token starts as the base embedding of its top-left cell: the
        # final value for base tokens, overwritten for merged ones.
        tokens = base_flat.index_select(0, _cell_index(layout, height, width))
        for scale in range(1, layout.num_scales):
            index = (layout.scale_index == scale).nonzero(as_tuple=True)[0]
            # While training, empty scales still run (on zero tokens) so the
            # APT layers always get a (zero) gradient: DDP then needs no
            # find_unused_parameters when a batch merges nothing.
            if index.numel() == 0 and not (self.training
                                           and torch.is_grad_enabled()):
                continue
            value = self._resized_embed(images, layout, index, scale,
                                        patch_embed)
            value = value + self.zero_linear(
                self._aggregate(base_flat, layout, index, scale, height,
                                width))
            tokens = tokens.index_copy(0, index, value)
        return tokens

    def _resized_embed(self, images: Tensor, layout, index: Tensor,
                       scale: int, patch_embed: PatchEmbed) -> Tensor:
        """Patch embedding of the kept patches, area-resized to p x p."""
        factor = 1 << scale
        p = patch_embed.patch_size
        small = F.avg_pool2d(images, factor, factor)
        batch, chans, sh, sw = small.shape
        rows, cols = sh // p, sw // p
        tiles = small.view(batch, chans, rows, p, cols, p).permute(
            0, 2, 4, 1, 3, 5).reshape(batch * rows * cols, chans * p * p)
        flat = (layout.image_index[index] * rows +
                (layout.row[index] >> scale)) * cols + (
                    layout.col[index] >> scale)
        return patch_embed.embed_patches(tiles.index_select(0, flat))

    def _aggregate(self, base_flat: Tensor, layout, index: Tensor, scale: int,
                   height: int, width: int) -> Tensor:
        """Shared 2x2 stride-2 conv applied ``scale`` times per token."""
        side = 1 << scale
        steps = torch.arange(side, device=index.device)
        rows = layout.row[index][:, None] + steps  # (n, s)
        cols = layout.col[index][:, None] + steps
        cells = (layout.image_index[index][:, None, None] * height +
                 rows[:, :, None]) * width + cols[:, None, :]  # (n, s, s)
        x = base_flat.index_select(0, cells.reshape(-1)).view(
            index.numel(), side, side, base_flat.shape[1])
        weight = self.aggregate.weight.flatten(1)  # (D, D*2*2): (c, ky, kx)
        for _ in range(scale):
            num, h, w, dims = x.shape
            x = x.view(num, h // 2, 2, w // 2, 2, dims).permute(
                0, 1, 3, 5, 2, 4).reshape(num, h // 2, w // 2, dims * 4)
            x = F.linear(x, weight, self.aggregate.bias)
        return x.reshape(index.numel(), base_flat.shape[1])


def _cell_index(layout, height: int, width: int) -> Tensor:
    """Flat (b, row, col) base-cell index of each token's top-left cell."""
    return (layout.image_index * height + layout.row) * width + layout.col
