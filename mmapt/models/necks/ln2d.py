# Copyright (c) mmapt contributors. All rights reserved.
"""LayerNorm over the channel axis of an NCHW tensor (ViTDet's ``LN2d``)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmapt.registry import MODELS


@MODELS.register_module()
class LN2d(nn.Module):
    """LayerNorm over channels for (B, C, H, W) feature maps.

    ViTDet normalises every spatial position over its C channels. mmcv's
    ``build_norm_layer`` finds this class through mmengine's root ``MODELS``
    registry, so ``norm_cfg=dict(type='LN2d', eps=1e-6)`` works in mmdet and
    mmseg configs alike (note that ``build_norm_layer`` fills ``eps=1e-5`` when
    the config does not give one; ViTDet uses ``1e-6``).

    Args:
        num_channels (int): Number of channels C.
        eps (float): Added to the variance for numerical stability.
            Defaults to 1e-6.
    """

    _abbr_ = 'ln'

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(
                f'LN2d expects a (B, {self.num_channels}, H, W) tensor, '
                f'got shape {tuple(x.shape)}')
        # The fused layer_norm on a channels-last view: faster (forward and
        # backward) than composing mean/var, with the same result. The
        # output must be contiguous NCHW again: mmcv's CPU ops (RoIAlign)
        # read the raw buffer as NCHW whatever the strides say.
        x = F.layer_norm(
            x.permute(0, 2, 3, 1), (self.num_channels, ), self.weight,
            self.bias, self.eps)
        return x.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return f'{self.num_channels}, eps={self.eps}'
