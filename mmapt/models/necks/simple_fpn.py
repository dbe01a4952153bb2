# Copyright (c) mmapt contributors. All rights reserved.
"""ViTDet's simple feature pyramid, built from one stride-16 feature map."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from mmapt.registry import MODELS


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """Simple feature pyramid of ViTDet (Li et al., ECCV 2022).

    From the single stride-16 map of a plain ViT it builds strides 4, 8, 16
    and 32 (two transposed convolutions, one, identity, a 2x2 max pool),
    projects each with a 1x1 lateral conv and a 3x3 output conv, and adds
    ``num_outs - 4`` extra levels by stride-2 max pooling of the last one
    (stride 64 for ``num_outs=5``, as the RPN of ViTDet expects).

    Args:
        backbone_channel (int): Channels C of the backbone map.
        in_channels (Sequence[int]): Channels of the four rescaled maps; for
            ViTDet these are ``[C // 4, C // 2, C, C]``.
        out_channels (int): Channels of every output level.
        num_outs (int): Number of output levels (>= 4).
        in_index (int): Which backbone output to use when the backbone
            returns several maps. Defaults to -1 (the last one).
        conv_cfg (dict, optional): Config of the lateral and output convs.
        norm_cfg (dict, optional): Norm config used after the first transposed
            conv of the stride-4 branch and in the lateral and output convs,
            e.g. ``dict(type='LN2d', eps=1e-6)``. ``None``: no norm.
        act_cfg (dict, optional): Activation of the lateral and output convs.
            Defaults to None (ViTDet uses none).
        init_cfg (dict or list[dict], optional): Initialization config.
    """

    def __init__(self,
                 backbone_channel: int,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 in_index: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # Lazy import: mmcv is only needed when a pyramid is actually built.
        from mmcv.cnn import ConvModule, build_norm_layer

        in_channels = list(in_channels)
        c = backbone_channel
        expected = [c // 4, c // 2, c, c]
        if in_channels != expected:
            raise ValueError(
                f'SimpleFPN: in_channels must be [C//4, C//2, C, C] = '
                f'{expected} for backbone_channel={c}, got {in_channels}')
        if num_outs < len(in_channels):
            raise ValueError(f'SimpleFPN: num_outs ({num_outs}) must be >= '
                             f'{len(in_channels)}')
        self.backbone_channel = c
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.in_index = in_index

        mid_norm = (
            build_norm_layer(norm_cfg, c //
                             2)[1] if norm_cfg is not None else nn.Identity())
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 2, 2), mid_norm, nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))

        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for ch in in_channels:
            self.lateral_convs.append(
                ConvModule(
                    ch,
                    out_channels,
                    1,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False))
            self.fpn_convs.append(
                ConvModule(
                    out_channels,
                    out_channels,
                    3,
                    padding=1,
                    conv_cfg=conv_cfg,
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg,
                    inplace=False))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor]:
        """Build the pyramid.

        Args:
            inputs (Sequence[Tensor]): Backbone outputs, each (B, C, H, W) at
                stride 16; ``inputs[in_index]`` is used.

        Returns:
            tuple[Tensor]: ``num_outs`` maps at strides 4, 8, 16, 32, 64, ...
        """
        x = inputs[self.in_index]
        if x.shape[1] != self.backbone_channel:
            raise ValueError(
                f'SimpleFPN: expected {self.backbone_channel} input channels '
                f'(backbone_channel), got {x.shape[1]}')
        feats: List[torch.Tensor] = [
            self.fpn1(x),
            self.fpn2(x),
            self.fpn3(x),
            self.fpn4(x)
        ]
        outs = [
            fpn_conv(lateral(feat)) for feat, lateral, fpn_conv in zip(
                feats, self.lateral_convs, self.fpn_convs)
        ]
        for _ in range(self.num_outs - self.num_ins):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)
