"""APT-EVA02: EVA-02 on entropy-chosen multi-scale patches, packed tokens."""
from mmapt.registry import MODELS
from ..apt import APTBackboneMixin
from .eva02 import EVA02


@MODELS.register_module()
class APTEVA02(APTBackboneMixin, EVA02):
    """EVA-02 with Adaptive Patch Transformer tokens, for dense prediction.

    :class:`EVA02` plus :class:`~mmapt.models.apt.APTAdapter`: the tokenizer
    picks a patch size per region from pixel entropy (``mmapt.tokenizer``);
    large patches are embedded with :class:`~mmapt.models.layers.APTEmbed`;
    all tokens of the batch (class token first in each image when
    ``use_cls_token``) run through the EVA-02 blocks as one packed (N, C)
    sequence, window blocks attending within (image, window) groups and
    global blocks within images; every requested block's output is unpacked
    to the base grid (each token repeated over its cells).

    Same weights as :class:`EVA02`: a plain EVA-02 checkpoint loads and only
    ``apt_embed.*`` is reported missing. With every threshold -1 (no merge)
    the output equals :class:`EVA02`'s.

    Args:
        **kwargs: :class:`~mmapt.models.apt.APTBackboneMixin` arguments
            (``thresholds``, ``entropy_bins``, ``mean``, ``std``) and
            :class:`EVA02` arguments. ``window_size`` must be a multiple of
            the largest patch in cells, and inputs a multiple of the largest
            patch. Inputs need not fill whole windows: windows at the
            bottom/right border are then partial (padding-free inference,
            e.g. ``pad_size_divisor=128`` without the square canvas), and
            positions stay those of the ``img_size`` canvas.
    """
