"""APTBackboneMixin: a plain ViT backbone class + this mixin = its APT class.

    @MODELS.register_module()
    class APTEVA02(APTBackboneMixin, EVA02):
        '''docstring'''

The plain class must be an :class:`~mmapt.models.apt.APTHost` (every
:class:`~mmapt.models.backbones.base_vit.BaseViT` is) with a
``warn_img_size(check)``, an ``embedding_names`` tuple and a
``_freeze_stages()`` (the base's). The mixin builds the plain model first,
then its own parts: ``apt_embed``, the :class:`APTAdapter` that drives
the forward and, with a ``learned`` scorer, its frozen network as
``apt_scorer``.
"""
from typing import Optional, Tuple

from torch import Tensor

from mmapt.tokenizer import PatchLayout, PatchTokenizer
from ..data_preprocessors.apt_inputs import split_apt_inputs
from ..layers import APTEmbed
from ..layers.context import PackedContext
from ..layers.inputs import check_image_batch
from .adapter import APTAdapter
from .layout_record import attach_layout_record


class APTBackboneMixin:
    """Adds the APT arguments and hands ``forward`` to an :class:`APTAdapter`.

    Args:
        *args, **kwargs: The plain backbone's arguments, and the APT ones
            (:meth:`APTAdapter.arg_names`: ``thresholds``, ``entropy_bins``,
            ``mean``, ``std`` and the tokenizer's own, such as ``patch_sizes``:
            stated explicitly, as the configs do, they must match the
            thresholds and are recorded in state dicts, see
            :mod:`~mmapt.models.apt.layout_record`), which go to
            :class:`APTAdapter` (see it for their meaning and defaults).
    """

    #: Parameters (relative to the backbone) that only APT has; the
    #: layer-decay constructor gives them their own learning-rate rule.
    apt_param_prefixes: Tuple[str, ...] = ('apt_embed.', )

    def __init__(self, *args, **kwargs) -> None:
        apt_kwargs = {
            name: kwargs.pop(name)
            for name in APTAdapter.arg_names() if name in kwargs
        }
        super().__init__(*args, **kwargs)
        self.apt_embed = APTEmbed(self.embed_dims)
        self.apt = APTAdapter(self, self.apt_embed, **apt_kwargs)
        if self.apt.tokenizer.scorer.network is not None:
            # A learned scorer's weights: in the state dict (checkpoints,
            # init_cfg, load_from) and moved by .to(), never trained here.
            self.apt_scorer = self.apt.tokenizer.scorer.network
        attach_layout_record(self)  # patch sizes into state dicts
        self.warn_img_size(self.apt.check_input_size)
        self._freeze_stages()  # again: apt_embed is part of stage 0

    @property
    def embedding_names(self) -> Tuple[str, ...]:
        """The plain model's embedding plus ``apt_embed``."""
        return super().embedding_names + ('apt_embed', )

    @property
    def tokenizer(self) -> PatchTokenizer:
        return self.apt.tokenizer

    # Stages, for tests and benchmarks.
    def tokenize(self,
                 x: Tensor,
                 importance: Optional[Tensor] = None) -> PatchLayout:
        x, importance = split_apt_inputs(x, importance)
        return self.apt.tokenize(x, importance)

    def embed(self, x: Tensor, layout: PatchLayout) -> Tensor:
        return self.apt.embed(x, layout)

    def packed_context(self, layout: PatchLayout) -> PackedContext:
        return self.apt.packed_context(layout)

    def forward(self,
                x: Tensor,
                importance: Optional[Tensor] = None) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index.

        ``importance`` (B, H, W): per-image maps for the ``importance``
        scorer; or pass them as a 4th input channel (what
        :class:`~mmapt.models.data_preprocessors.APTDataPreprocessor` does).
        """
        check_image_batch(x, self.patch_embed.proj.weight.dtype, (3, 4))
        x, importance = split_apt_inputs(x, importance)
        if self.accelerate is not None and self.accelerating(x.device):
            return self.forward_accelerated(x, importance)
        return self.apt(x, importance)

    def forward_accelerated(
            self, x: Tensor,
            importance: Optional[Tensor]) -> Tuple[Tensor, ...]:
        """The batch's token bucket (one host read), then the compiled /
        graphed static-shape forward of (bucket, input shape, dtype)."""
        pack_size = self.apt.select_pack_size(x, importance)  # checks x
        key = ('apt', pack_size, tuple(x.shape), x.dtype, importance is None)
        adapter = self.apt

        def make_fn():

            def static(x: Tensor, importance: Optional[Tensor] = None):
                return adapter.forward_static(x, importance, pack_size)

            return static

        inputs = (x, ) if importance is None else (x, importance)
        return self.run_accelerated(key, make_fn, inputs)
