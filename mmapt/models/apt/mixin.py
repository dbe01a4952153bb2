"""APTBackboneMixin: a plain ViT backbone class + this mixin = its APT class.

    @MODELS.register_module()
    class APTEVA02(APTBackboneMixin, EVA02):
        '''docstring'''

The plain class must call ``self._init_extra()`` once its blocks and
embeddings exist (before freezing stages), route input checks through
``check_input_size`` and list extra stage-0 modules in
``embedding_modules()``; everything else is the adapter's
(:class:`~mmapt.models.apt.APTAdapter`).
"""
from typing import List, Optional, Sequence, Tuple

from torch import Tensor, nn

from mmapt.tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchLayout,
                             PatchTokenizer, check_thresholds)
from .adapter import APTAdapter
from .context import PackedContext
from .layout_record import attach_layout_record


class APTBackboneMixin:
    """Adds the APT arguments and hands ``forward`` to an :class:`APTAdapter`.

    Args:
        thresholds (Sequence[float]): Entropy threshold per scale above the
            base one, smallest first; patch sizes are
            ``patch_size * 2**i`` for ``i = 0..len(thresholds)``. -1 disables
            a scale. Defaults to the paper's detection setting (2, 2, 0.3).
        entropy_bins (int): Histogram bins of the entropy. Defaults to 512.
        mean (Sequence[float]): RGB mean the data preprocessor normalised
            with (undone to measure entropy on 0-255 gray levels).
        std (Sequence[float]): RGB std, likewise.
        patch_sizes (Sequence[int], optional): The patch sizes, stated
            explicitly (configs do): they must be ``patch_size * 2**i`` and
            one more than the thresholds, so an override of either that
            drops or adds a scale is an error. Defaults to None (implied by
            the thresholds). State dicts record the sizes, see
            :mod:`~mmapt.models.apt.layout_record`.
        *args, **kwargs: The plain backbone's arguments.
    """

    #: Parameters (relative to the backbone) that only APT has; the
    #: layer-decay constructor gives them their own learning-rate rule.
    apt_param_prefixes: Tuple[str, ...] = ('apt_embed.', )

    def __init__(self,
                 *args,
                 thresholds: Sequence[float] = (2.0, 2.0, 0.3),
                 entropy_bins: int = 512,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 patch_sizes: Optional[Sequence[int]] = None,
                 **kwargs) -> None:
        # Read by _init_extra, which the plain __init__ calls.
        self._apt_args = dict(
            thresholds=tuple(thresholds),
            entropy_bins=entropy_bins,
            mean=tuple(mean),
            std=tuple(std))
        self._apt_patch_sizes = patch_sizes
        super().__init__(*args, **kwargs)

    def _init_extra(self) -> None:
        super()._init_extra()
        if self._apt_patch_sizes is not None:
            check_thresholds(self._apt_args['thresholds'],
                             self._apt_patch_sizes, self.patch_size)
        self.apt = APTAdapter(self, **self._apt_args)
        attach_layout_record(self)

    @property
    def tokenizer(self) -> PatchTokenizer:
        return self.apt.tokenizer

    def check_input_size(self, height: int, width: int) -> Tuple[int, int]:
        grid = super().check_input_size(height, width)
        self.apt.check_input_size(height, width)
        return grid

    def embedding_modules(self) -> List[nn.Module]:
        return super().embedding_modules() + [self.apt_embed]

    # Stages, for tests and benchmarks.
    def tokenize(self, x: Tensor) -> PatchLayout:
        return self.apt.tokenize(x)

    def embed(self, x: Tensor, layout: PatchLayout) -> Tensor:
        return self.apt.embed(x, layout)

    def packed_context(self, layout: PatchLayout) -> PackedContext:
        return self.apt.packed_context(layout)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index."""
        return self.apt(x)
