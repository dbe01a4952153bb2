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

from mmapt.models.stages import forward_stage
from mmapt.tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchLayout,
                             PatchTokenizer)
from mmapt.tokenizer.cache_pins import BoundedCache
from mmapt.tokenizer.entropy import ENTROPY_BINS
from mmapt.tokenizer.layout import PackSizeSpec
from ..layers import APTEmbed, ParamCache, build_plans
from ..layers.attention import StaticPlan, attention_settings
from ..layers.context import AttentionGroups, PackedContext
from ..layers.rope import identity_rope, patch_centers
from .host import APTHost, missing_host_members

# Tokenizer arguments the host decides; every other tokenizer argument is
# an APT argument.
_HOST_TOKENIZER_ARGS = ('self', 'patch_size', 'window_size',
                        'num_prefix_tokens')


class APTAdapter:
    """Adaptive Patch Transformer tokens for a plain ViT backbone.

    Not an ``nn.Module``: it holds no weights of its own (the APT layers are
    the host's ``apt_embed``), only the tokenizer and its table caches.

    Args:
        host (APTHost): The backbone.
        apt_embed (APTEmbed): The APT layers, a submodule of ``host``.
        thresholds (Sequence[float]): Entropy threshold per scale above the
            base one, smallest first; patch sizes are ``patch_size * 2**i``
            for ``i = 0..len(thresholds)``; -1 disables a scale. Defaults to
            the paper's detection setting (2, 2, 0.3).
        entropy_bins (int): Histogram bins of the entropy. Defaults to
            :data:`~mmapt.tokenizer.entropy.ENTROPY_BINS`.
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
                 entropy_bins: int = ENTROPY_BINS,
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
            entropy_bins=entropy_bins,
            mean=tuple(mean),
            std=tuple(std),
            window_size=host.window_size,
            num_prefix_tokens=host.num_prefix_tokens,
            **tokenizer_kwargs)
        self._tables = ParamCache()
        # RoPE tables depend on the grid and the host's frequencies (fixed
        # at build), not on a parameter: a plain bounded cache.
        self._rope_cache = BoundedCache(8)

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

    @property
    def pack_size(self) -> PackSizeSpec:
        """Static-shape mode: every forward's packed sequence, prefix tokens
        included, is padded to a fixed number of tokens, so every tensor of
        the forward after the size is chosen has a shape fixed by (batch,
        input size, size) and nothing is read back to the host: the forward
        can be captured as a CUDA graph (one per size), compiled with
        ``fullgraph=True`` or exported. The padding tokens form their own
        attention groups and their outputs are dropped, so the outputs
        equal exact packing's.

        - None: exact packing (one host read per forward);
        - an int: that size, no host read;
        - a list of ints (token buckets): each batch takes the smallest
          that holds it, one host read of its token count per forward,
          before anything that could be captured runs (:meth:`__call__`);
        - ``'auto'``: buckets at 25/50/75/100% of the input's base tokens
          (:func:`~mmapt.tokenizer.layout.default_pack_sizes`); in budget
          mode the one bucket that holds the budget, no host read
          (:meth:`PatchTokenizer.auto_pack_sizes`).

        A batch needing more tokens than the (largest) size is capped to fit
        by score (never NaN, see :meth:`PatchTokenizer.layout`); the token
        observers are told (``capped``). Validated when set; tools may set
        it between forwards."""
        return self.tokenizer.pack_size

    @pack_size.setter
    def pack_size(self, value: PackSizeSpec) -> None:
        self.tokenizer.pack_size = value  # validated there

    def pack_sizes(self, batch: int, height: int,
                   width: int) -> Optional[Tuple[int, ...]]:
        """The static sizes in effect for a (batch, 3, height, width)
        input, ascending; None: exact packing."""
        return self.tokenizer.pack_sizes(
            batch, self.tokenizer.grid_size(height, width))

    def select_pack_size(self,
                         x: Tensor,
                         importance: Optional[Tensor] = None,
                         buckets: Optional[Sequence[int]] = None) -> int:
        """The pack size a static forward of ``x`` takes: the smallest of
        ``buckets`` (default: :meth:`pack_sizes`, or the ``'auto'`` buckets
        in exact mode) that holds the batch, the largest when none does
        (the batch is then capped to it). One host read; none with a single
        bucket. Checks ``x`` (once)."""
        return self.tokenizer.select_pack_size(x, importance, buckets)

    def check_input_size(self, height: int, width: int) -> None:
        """ValueError naming the fix when the images cannot be tokenized:
        a side not a multiple of the largest patch (so a multiple of the
        host's patch size too), or, in budget mode, a budget below the
        minimum of this size. The one input check of an APT forward,
        made by the tokenizer (the window was checked when it was
        built)."""
        self.tokenizer.check_input_size(height, width)

    # ---------------------------------------------------------------- stages
    def tokenize(self,
                 x: Tensor,
                 importance: Optional[Tensor] = None) -> PatchLayout:
        """Images (B, 3, H, W) -> :class:`PatchLayout` (no gradients), with
        the pack size :meth:`__call__` would take."""
        return self.tokenizer(x, importance)

    def position_tables(self, grid: Tuple[int, int],
                        num_scales: int) -> Optional[List[Tensor]]:
        """Absolute positions per scale ``i``: the position map
        average-pooled by ``2**i`` (the mean over a patch's cells), as
        :class:`~mmapt.models.layers.APTEmbed` takes them: (Hc, Wc, C)
        channels-last for scale 0, (1, C, Hc / 2**i, Wc / 2**i) above;
        None without absolute positions. Cached at inference."""
        host = self.host
        if host.pos_embed is None:
            return None

        def compute() -> List[Tensor]:
            pos = host.position_map(grid)
            return [pos[0].permute(1, 2, 0).contiguous()] + [
                F.avg_pool2d(pos, 1 << scale)
                for scale in range(1, num_scales)
            ]

        return self._tables.get(host.pos_embed, (tuple(grid), num_scales),
                                compute)

    def embed(self, x: Tensor, layout: PatchLayout) -> Tensor:
        """Packed token embeddings (``layout.num_packed``, C): each image's
        prefix tokens, then its content tokens, positions included; one
        gather from the per-scale maps."""
        host = self.host
        pos = self.position_tables(layout.grid_size, layout.num_scales)
        prefix = host.prefix_tokens(layout.batch_size) \
            if layout.num_prefix_tokens else None
        return self.apt_embed(x, host.patch_embed(x), pos, layout,
                              host.patch_embed, prefix)

    def packed_context(self, layout: PatchLayout) -> PackedContext:
        """Attention groups, their plans and RoPE tables, for all blocks.

        Exact packing: :class:`VarlenPlan` from the offsets the layout read
        once. Static mode: :class:`StaticPlan` (device-side only) on the
        fixed-length offsets and the fixed ``max_seqlen`` bounds; its
        ``kernel`` (``'static_varlen'`` or ``'static_sdpa'``) is set by the
        first block that attends."""
        backend, observers = attention_settings(self.host)
        if layout.static:
            window_plan = StaticPlan(
                layout.cu_seqlens_window,
                layout.num_real_groups_window,
                layout.max_seqlen_window,
                layout.num_packed,
                backend=backend)
            image_plan = window_plan \
                if layout.cu_seqlens_window is layout.cu_seqlens_image \
                else StaticPlan(layout.cu_seqlens_image,
                                layout.num_real_groups_image,
                                layout.max_seqlen_image, layout.num_packed,
                                backend=backend)
        else:
            window_plan, image_plan = build_plans(
                (layout.cu_seqlens_window, layout.max_seqlen_window,
                 layout.host_cu_seqlens_window),
                (layout.cu_seqlens_image, layout.max_seqlen_image,
                 layout.host_cu_seqlens_image))
        window_rope = image_rope = None
        if self.host.rope is not None:
            image_rope, window_rope = self._rope_tables(layout)
        return PackedContext(
            layout=layout,
            window=AttentionGroups(layout.cu_seqlens_window,
                                   layout.max_seqlen_window, window_plan,
                                   window_rope, backend, observers),
            image=AttentionGroups(layout.cu_seqlens_image,
                                  layout.max_seqlen_image, image_plan,
                                  image_rope, backend, observers),
            packed_image_index=layout.packed_image_index,
            num_images=layout.batch_size,
            num_prefix_tokens=layout.num_prefix_tokens)

    def _rope_tables(self, layout: PatchLayout) -> Tuple[Tensor, Tensor]:
        """Global and window RoPE tables of the packed tokens: at token
        centres, window-relative in window blocks; identity (no rotation)
        for prefix and padding tokens. One gather each from per-scale
        tables that depend only on the grid (cached)."""
        rope = self.host.rope
        grid, ws = layout.grid_size, layout.window_size
        device = layout.position_index.device
        key = (tuple(grid), layout.num_scales, ws, str(device))

        def compute() -> Tuple[Tensor, Tensor]:
            centers = patch_centers(grid, layout.num_scales, device)
            image = rope(centers, self.host.nominal_grid(grid))
            window = image
            if ws:
                origin = (centers.long() // ws * ws).to(centers.dtype)
                window = rope(centers - origin, (ws, ws))
            # cos 1, sin 0 rotates nothing: exact, no branch.
            identity = identity_rope(1, image)
            image = torch.cat([image, identity])
            return image, (torch.cat([window, identity]) if ws else image)

        image_table, window_table = self._rope_cache.get(key, compute)
        image_rope = image_table.index_select(0, layout.position_index)
        window_rope = window_table.index_select(
            0, layout.position_index) if ws else image_rope
        return image_rope, window_rope

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
        not counted) through the host's ``notify_tokens``; in static mode
        also whether the batch was capped to its pack size."""
        tokens = layout.tokens_per_image
        baseline = torch.full_like(tokens, layout.baseline_tokens)
        if layout.capped is None:
            self.host.notify_tokens(tokens, baseline)
        else:
            self.host.notify_tokens(tokens, baseline, capped=layout.capped)

    def forward_static(self, x: Tensor, importance: Optional[Tensor],
                       pack_size: int) -> Tuple[Tensor, ...]:
        """The forward with ``pack_size`` fixed by the caller (e.g. the one
        :meth:`select_pack_size` chose): no host read, shapes fixed by
        (batch, input size, ``pack_size``); what to capture or compile per
        bucket. A batch needing more is capped to fit."""
        with forward_stage(self.host, 'tokenizer'):  # tokenizer checks x once
            layout = self.tokenizer.layout(x, importance, pack_size)
        return self._forward_layout(x, layout)

    def _forward_layout(self, x: Tensor,
                        layout: PatchLayout) -> Tuple[Tensor, ...]:
        with forward_stage(self.host, 'embedding'):
            tokens = self.embed(x, layout)
        with forward_stage(self.host, 'context'):
            ctx = self.packed_context(layout)
        with forward_stage(self.host, 'blocks'):
            outs = self.forward_blocks(tokens, ctx)
        with forward_stage(self.host, 'unpack'):
            self.report_tokens(layout)
            return layout.unpack_all(outs)

    def __call__(self,
                 x: Tensor,
                 importance: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index;
        ``importance`` (B, H, W): maps for the ``importance`` scorer.

        Exact packing when :attr:`pack_size` is None; one int: the static
        forward at that size; buckets: the smallest that fits (one host
        read, the selection reused for the layout), then the static
        forward."""
        spec = self.pack_size
        if isinstance(spec, int):
            return self.forward_static(x, importance, spec)
        with forward_stage(self.host, 'tokenizer'):  # tokenizer checks x once
            layout = self.tokenize(x, importance)
        return self._forward_layout(x, layout)
