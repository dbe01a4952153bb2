"""A feature pyramid for UperNet built from plain-ViT feature maps.

EVA-02's UperNet recipe (and BEiT's before it) taps a plain ViT at several
depths; every tapped map has stride 16. This neck turns the k-th map into one
pyramid level by rescaling it with ``rescales[k]``: ``4`` -> two stride-2
transposed convolutions with a norm and an activation between them (stride 4),
``2`` -> one transposed convolution (stride 8), ``1`` -> identity (stride 16),
``0.5`` -> 2x2 max pooling (stride 32). Channels are kept; UperNet's lateral
convolutions reduce them.

Compared with mmseg's ``Feature2Pyramid`` this neck takes its norm from the
config with a CPU/DDP-safe default (``LN2d``, the channel LayerNorm of ViTDet)
instead of ``SyncBN``, accepts any power-of-two rescale, and checks its inputs.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmapt.registry import MODELS


def _rescale_exponent(scale: float) -> int:
    """Return ``k`` with ``scale == 2**k`` or raise a ``ValueError``."""
    if scale <= 0:
        raise ValueError(f'ViTPyramidNeck: rescale {scale} must be positive; '
                         'use powers of two such as 4, 2, 1, 0.5.')
    exponent = math.log2(scale)
    if abs(exponent - round(exponent)) > 1e-6:
        raise ValueError(f'ViTPyramidNeck: rescale {scale} is not a power of '
                         'two; use values such as 4, 2, 1, 0.5, 0.25.')
    return int(round(exponent))


@MODELS.register_module()
class ViTPyramidNeck(BaseModule):
    """Build a multi-scale pyramid from same-stride plain-ViT feature maps.

    Input ``k`` (a ``(B, C, H, W)`` map) is rescaled by ``rescales[k]``:
    upsampling by ``2**n`` uses ``n`` ``ConvTranspose2d(C, C, 2, 2)`` layers
    with ``norm -> act`` between consecutive ones (EVA-02's ``fpn1`` for a
    factor of 4), downsampling by ``2**n`` uses ``MaxPool2d(2**n)`` and a
    factor of 1 is the identity.

    Args:
        embed_dims (int): Channels of every input map (the backbone's
            ``embed_dims``, e.g. 768 for EVA-02-B). Output maps keep it.
        rescales (Sequence[float]): One power-of-two factor per input map.
            Defaults to ``(4, 2, 1, 0.5)``: strides 4, 8, 16, 32 from
            stride-16 inputs.
        norm_cfg (dict): Norm between stacked transposed convolutions, built
            with mmcv's ``build_norm_layer`` (any registered norm, e.g.
            ``dict(type='LN2d')``, ``dict(type='GN', num_groups=32)`` or
            ``dict(type='SyncBN')`` for multi-GPU BN). Defaults to
            ``dict(type='LN2d', eps=1e-6)``, which works on CPU, on one GPU
            and under DDP alike.
        act_cfg (dict): Activation between stacked transposed convolutions.
            Defaults to ``dict(type='GELU')``.
        init_cfg (dict or list[dict], optional): Initialization config.
            Defaults to None (PyTorch's default init of the layers).
        embed_dim (int, optional): The former name of ``embed_dims``, still
            accepted for configs written with it.
    """

    def __init__(self,
                 embed_dims: Optional[int] = None,
                 rescales: Sequence[float] = (4, 2, 1, 0.5),
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 embed_dim: Optional[int] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # mmcv is imported lazily so that ``import mmapt`` needs only torch
        # and mmengine.
        from mmcv.cnn import build_activation_layer, build_norm_layer

        if embed_dim is not None:
            if embed_dims not in (None, embed_dim):
                raise ValueError(
                    f'ViTPyramidNeck: embed_dims={embed_dims} and '
                    f'embed_dim={embed_dim} disagree; give embed_dims only.')
            embed_dims = embed_dim
        if embed_dims is None or embed_dims <= 0:
            raise ValueError('ViTPyramidNeck: embed_dims (the backbone\'s) '
                             f'must be positive, got {embed_dims}.')
        if len(rescales) == 0:
            raise ValueError('ViTPyramidNeck: rescales must not be empty.')
        norm_cfg = dict(
            type='LN2d', eps=1e-6) if norm_cfg is None else norm_cfg
        act_cfg = dict(type='GELU') if act_cfg is None else act_cfg
        self.embed_dims = embed_dims
        self.rescales = tuple(float(s) for s in rescales)

        self.levels = nn.ModuleList()
        for scale in self.rescales:
            exponent = _rescale_exponent(scale)
            if exponent > 0:
                layers: List[nn.Module] = []
                for step in range(exponent):
                    if step > 0:
                        layers.append(
                            build_norm_layer(norm_cfg, embed_dims)[1])
                        layers.append(build_activation_layer(act_cfg))
                    layers.append(
                        nn.ConvTranspose2d(
                            embed_dims, embed_dims, kernel_size=2, stride=2))
                self.levels.append(nn.Sequential(*layers))
            elif exponent == 0:
                self.levels.append(nn.Identity())
            else:
                factor = 2**(-exponent)
                self.levels.append(
                    nn.MaxPool2d(kernel_size=factor, stride=factor))

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Rescale each input map to its pyramid level.

        Args:
            inputs (Sequence[Tensor]): ``len(rescales)`` maps of shape
                ``(B, embed_dims, H, W)``, finest level first.

        Returns:
            tuple[Tensor]: One map per level, ``(B, embed_dims, H * s, W * s)``
            for rescale ``s``.
        """
        if len(inputs) != len(self.levels):
            raise ValueError(
                f'ViTPyramidNeck got {len(inputs)} feature maps but has '
                f'{len(self.levels)} rescales {self.rescales}: set the '
                'backbone out_indices to one index per rescale.')
        outputs = []
        for x, level in zip(inputs, self.levels):
            if x.dim() != 4 or x.shape[1] != self.embed_dims:
                raise ValueError(
                    'ViTPyramidNeck expects (B, embed_dims, H, W) maps with '
                    f'embed_dims={self.embed_dims}, got {tuple(x.shape)}: set '
                    'neck.embed_dims to the backbone embed_dims.')
            outputs.append(level(x))
        return tuple(outputs)


__all__ = ['ViTPyramidNeck']
