"""APTAdapter: all APT logic a plain ViT backbone needs, in one place.

A backbone ("host", see :class:`~mmapt.models.apt.APTHost` for exactly what
the adapter reads from it) holds one adapter and hands its forward to it.
The adapter tokenizes the images, embeds the multi-scale patches with the
APT layers it is given (registered on the host as ``apt_embed``, so
checkpoint keys stay ``apt_embed.*``), builds the packed context, runs the
host's blocks on the packed tokens and unpacks the requested outputs to
dense maps.
"""
import inspect
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmapt.tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchLayout,
                             PatchTokenizer)
from mmapt.utils.stages import forward_stage
from ..layers import APTEmbed, ParamCache, build_plans
from ..layers.context import AttentionGroups, PackedContext
from .host import APTHost, missing_host_members

# Tokenizer arguments the host decides (``entropy_bins`` is the adapter's
# name for ``num_bins``); every other tokenizer argument is an APT argument.
_HOST_TOKENIZER_ARGS = ('self', 'patch_size', 'window_size',
                        'num_prefix_tokens', 'num_bins')


class APTAdapter:
    """Adaptive Patch Transformer tokens for a plain ViT backbone.

    Not an ``nn.Module``: it holds no weights of its own (the APT layers are
    the host's ``apt_embed``), only the tokenizer and a position-table cache.

    Args:
        host (APTHost): The backbone.
        apt_embed (APTEmbed): The APT layers, a submodule of ``host``.
        thresholds (Sequence[float]): Entropy threshold per scale above the
            base one, smallest first; patch sizes are ``patch_size * 2**i``
            for ``i = 0..len(thresholds)``; -1 disables a scale. Defaults to
            the paper's detection setting (2, 2, 0.3).
        entropy_bins (int): Histogram bins of the entropy. Defaults to 512.
        mean (Sequence[float]): RGB mean the images were normalised with
            (undone to measure entropy on 0-255 gray levels).
        std (Sequence[float]): RGB std the images were normalised with.
        **tokenizer_kwargs: Further :class:`~mmapt.tokenizer.PatchTokenizer`
            arguments (not those the host decides: patch size, window,
            prefix tokens).
    """

    def __init__(self,
                 host: APTHost,
                 apt_embed: APTEmbed,
                 thresholds: Sequence[float] = (2.0, 2.0, 0.3),
                 entropy_bins: int = 512,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 **tokenizer_kwargs) -> None:
        missing = missing_host_members(host)
        if missing:
            raise TypeError(f'{type(host).__name__} cannot host APT: it lacks '
                            f'{missing} (see mmapt.models.apt.APTHost)')
        self.host = host
        self.apt_embed = apt_embed
        self.tokenizer = PatchTokenizer(
            patch_size=host.patch_size,
            thresholds=tuple(thresholds),
            num_bins=entropy_bins,
            mean=tuple(mean),
            std=tuple(std),
            window_size=host.window_size,
            num_prefix_tokens=host.num_prefix_tokens,
            **tokenizer_kwargs)
        self._tables = ParamCache()

    @classmethod
    def arg_names(cls) -> Tuple[str, ...]:
        """The keyword arguments of an APT backbone that configure APT
        (this constructor's and the tokenizer's own); the rest build the
        plain ViT."""
        own = [
            name for name in inspect.signature(cls.__init__).parameters
            if name not in ('self', 'host', 'apt_embed', 'tokenizer_kwargs')
        ]
        tokenizer = [
            name
            for name in inspect.signature(PatchTokenizer.__init__).parameters
            if name not in _HOST_TOKENIZER_ARGS and name not in own
        ]
        return tuple(own + tokenizer)

    def check_input_size(self, height: int, width: int) -> None:
        """ValueError naming the fix when the images cannot be tokenized."""
        self.tokenizer.check_input_size(height, width)

    # ---------------------------------------------------------------- stages
    def tokenize(self, x: Tensor) -> PatchLayout:
        """Images (B, 3, H, W) -> :class:`PatchLayout` (no gradients)."""
        return self.tokenizer(x)

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
        content = self.apt_embed(x, host.patch_embed(x), pos, layout,
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
            packed_image_index=layout.packed_image_index,
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
        not counted) through the host's ``notify_tokens``."""
        tokens = layout.tokens_per_image
        self.host.notify_tokens(
            tokens, torch.full_like(tokens, layout.baseline_tokens))

    def __call__(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index."""
        self.host.check_input_size(*x.shape[2:])
        self.check_input_size(*x.shape[2:])
        with forward_stage('tokenizer'):
            layout = self.tokenize(x)
        with forward_stage('embedding'):
            tokens = self.embed(x, layout)
        with forward_stage('context'):
            ctx = self.packed_context(layout)
        with forward_stage('blocks'):
            outs = self.forward_blocks(tokens, ctx)
        with forward_stage('unpack'):
            self.report_tokens(layout)
            return tuple(layout.unpack(t).contiguous() for t in outs)
