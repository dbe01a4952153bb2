"""APT-ViT: a DINOv2-style ViT on entropy-chosen multi-scale patches."""
from mmapt.registry import MODELS
from ..apt import APTBackboneMixin
from .vit import ViT


@MODELS.register_module()
class APTViT(APTBackboneMixin, ViT):
    """DINOv2-style ViT with Adaptive Patch Transformer tokens.

    :class:`ViT` plus :class:`~mmapt.models.apt.APTAdapter`, exactly as
    :class:`APTEVA02` is :class:`EVA02` plus the adapter: patch sizes
    ``patch_size * 2**i`` (14 / 28 / 56 / 112 for DINOv2), each image's
    class and register tokens first in its packed group (attending with the
    whole image in global blocks, among themselves in window blocks), large
    patches positioned by the average of the position map over their cells
    (no RoPE). Same weights as :class:`ViT` plus ``apt_embed.*``; with every
    threshold -1 (no merge) the output equals :class:`ViT`'s.

    Args:
        thresholds (Sequence[float]): Entropy threshold per scale above the
            base one, smallest first; -1 disables a scale. Defaults to the
            paper's detection setting (2, 2, 0.3).
        entropy_bins (int): Histogram bins of the entropy. Defaults to 512.
        mean (Sequence[float]): RGB mean the data preprocessor normalised
            with (undone to measure entropy on 0-255 gray levels).
        std (Sequence[float]): RGB std, likewise.
        **kwargs: :class:`ViT` arguments. ``window_size`` must be a multiple
            of the largest patch in cells, and inputs a multiple of the
            window (or of the largest patch without windows).
    """
