"""APT-EVA02: EVA-02 on entropy-chosen multi-scale patches, packed tokens."""
from typing import List, NamedTuple, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmapt.registry import MODELS
from mmapt.tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchLayout,
                             PatchTokenizer, build_layout)
from ..layers import APTEmbed, VarlenPlan, build_plans
from .eva02 import EVA02


class PackedContext(NamedTuple):
    """Everything the blocks need about a layout, computed once a forward.

    ``*_rope`` are per-token complex RoPE tables (N, head_dim / 2),
    ``*_cu``/``*_max`` the groups and ``*_plan`` their attention plans.
    """
    window_rope: Tensor
    window_cu: Tensor
    window_max: int
    window_plan: VarlenPlan
    global_rope: Tensor
    image_cu: Tensor
    image_max: int
    image_plan: VarlenPlan


@MODELS.register_module()
class APTEVA02(EVA02):
    """EVA-02 with Adaptive Patch Transformer tokens, for dense prediction.

    The tokenizer picks a patch size per region from pixel entropy
    (``mmapt.tokenizer``); large patches are embedded with
    :class:`~mmapt.models.layers.APTEmbed`; all tokens of the batch run
    through the EVA-02 blocks as one packed (N, C) sequence, window blocks
    attending within (image, window) groups and global blocks within images;
    every requested block's output is unpacked to the base grid (each token
    repeated over its cells).

    Same weights as :class:`EVA02`: a plain EVA-02 checkpoint loads and only
    ``apt_embed.*`` is reported missing. With every threshold -1 (no merge)
    the output equals :class:`EVA02`'s.

    Args:
        thresholds (Sequence[float]): Entropy threshold per scale above the
            base one, smallest first; patch sizes are
            ``patch_size * 2**i`` for ``i = 0..len(thresholds)``. -1 disables
            a scale. Defaults to the paper's detection setting (2, 2, 0.3).
        entropy_bins (int): Histogram bins of the entropy. Defaults to 512.
        mean (Sequence[float]): RGB mean the data preprocessor normalised
            with (undone to measure entropy on 0-255 gray levels).
        std (Sequence[float]): RGB std, likewise.
        **kwargs: :class:`EVA02` arguments. ``window_size`` must be a multiple
            of the largest patch in cells, and inputs a multiple of the
            window (or of the largest patch without windows).
    """

    def __init__(self,
                 *args,
                 thresholds: Sequence[float] = (2.0, 2.0, 0.3),
                 entropy_bins: int = 512,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 **kwargs) -> None:
        self._tokenizer_args = dict(
            thresholds=tuple(thresholds),
            num_bins=entropy_bins,
            mean=tuple(mean),
            std=tuple(std))
        super().__init__(*args, **kwargs)

    def _init_extra(self) -> None:
        # The tokenizer holds no weights: a plain attribute, not a module.
        self.tokenizer = PatchTokenizer(
            patch_size=self.patch_size,
            window_size=self.window_size or None,
            **self._tokenizer_args)
        self.apt_embed = APTEmbed(self.embed_dims)

    def check_input_size(self, height: int, width: int) -> Tuple[int, int]:
        grid = super().check_input_size(height, width)
        self.tokenizer.check_input_size(height, width)
        return grid

    def embedding_modules(self) -> List[nn.Module]:
        return [self.apt_embed]

    # ---------------------------------------------------------------- stages
    def tokenize(self, x: Tensor) -> PatchLayout:
        """Images (B, 3, H, W) -> :class:`PatchLayout` (no gradients).

        When no threshold is positive no patch can merge (entropy is never
        negative), so the entropy maps are skipped and the plain grid is
        packed directly: "APT off" then costs no tokenizer time.
        """
        tokenizer = self.tokenizer
        if tokenizer.num_scales > 1 and max(tokenizer.thresholds) > 0:
            return tokenizer(x)
        height, width = x.shape[2:]
        tokenizer.check_input_size(height, width)
        grid = (height // self.patch_size, width // self.patch_size)
        masks = [
            x.new_full((x.shape[0], grid[0] >> i, grid[1] >> i), i == 0,
                       dtype=torch.bool) for i in range(tokenizer.num_scales)
        ]
        return build_layout(masks, grid, tokenizer.window_size)

    def embed(self, x: Tensor, layout: PatchLayout) -> Tensor:
        """Packed token embeddings (N, C), absolute position included."""
        pos = self.position_tables(layout.grid_size, layout.num_scales)
        return self.apt_embed(x, self.patch_embed(x), pos, layout,
                              self.patch_embed)

    def position_tables(self, grid: Tuple[int, int],
                        num_scales: int) -> List[Tensor]:
        """Per scale ``i``, the position map average-pooled by ``2**i``
        (= ``PatchLayout.pool`` for a token of that scale), flattened
        channels-last ``(rows_i * cols_i, C)``; cached at inference."""

        def compute() -> List[Tensor]:
            pos = self.position_map(grid)
            tables = []
            for scale in range(num_scales):
                pooled = pos if scale == 0 else F.avg_pool2d(
                    pos, 1 << scale)
                tables.append(pooled[0].permute(1, 2, 0).reshape(
                    -1, self.embed_dims))
            return tables

        return self._cached_position(f'tables{num_scales}', grid, compute)

    def packed_context(self, layout: PatchLayout) -> PackedContext:
        """RoPE tables and attention plans shared by all blocks."""
        centers = layout.centers()
        global_rope = self.rope(centers, self.nominal_grid(layout.grid_size))
        if layout.window_size is not None:
            ws = layout.window_size
            local = centers - layout.window_origin().to(centers.dtype)
            window_rope = self.rope(local, (ws, ws))
        else:
            window_rope = global_rope
        window_plan, image_plan = build_plans(
            (layout.cu_seqlens_window, layout.max_seqlen_window),
            (layout.cu_seqlens_image, layout.max_seqlen_image))
        return PackedContext(window_rope, layout.cu_seqlens_window,
                             layout.max_seqlen_window, window_plan,
                             global_rope, layout.cu_seqlens_image,
                             layout.max_seqlen_image, image_plan)

    def forward_blocks(self, tokens: Tensor,
                       layout: PatchLayout) -> List[Tensor]:
        """Run the blocks on packed tokens; packed outputs per out index."""
        ctx = self.packed_context(layout)
        outs = []
        for i, block in enumerate(self.blocks):
            if block.window_size:
                args = (ctx.window_rope, ctx.window_cu, ctx.window_max,
                        ctx.window_plan)
            else:
                args = (ctx.global_rope, ctx.image_cu, ctx.image_max,
                        ctx.image_plan)
            args = args + (layout.image_index, layout.batch_size)
            if self.with_cp and self.training and tokens.requires_grad:
                tokens = checkpoint(
                    block.forward_packed, tokens, *args, use_reentrant=False)
            else:
                tokens = block.forward_packed(tokens, *args)
            if i in self.out_indices:
                outs.append(tokens)
        return outs

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index."""
        self.check_input_size(*x.shape[2:])
        layout = self.tokenize(x)
        tokens = self.embed(x, layout)
        outs = [
            layout.unpack(t).contiguous()
            for t in self.forward_blocks(tokens, layout)
        ]
        self._notify_tokens(
            layout.tokens_per_image,
            torch.full_like(layout.tokens_per_image, layout.baseline_tokens))
        return self._order_outputs(outs)
