"""Plain DINOv2-style ViT backbone for dense prediction (ViTDet style)."""
from typing import Dict, List, Sequence, Union

import torch.nn as nn

from mmapt.registry import MODELS
from ..layers import ViTBlock
from .base_vit import BaseViT


@MODELS.register_module()
class ViT(BaseViT):
    """DINOv2-style vision transformer for dense prediction.

    The architecture of timm's ``vit_*_patch14_dinov2`` and
    ``vit_*_patch14_reg4_dinov2`` and of the official DINOv2 models: fused
    ``qkv`` with bias, GELU MLP, LayerScale, a class token, optional register
    tokens, and an absolute position table stored at the pretraining grid
    (DINOv2: 37 x 37 = 518 px / 14) and resampled to each input's grid as
    timm does (bicubic, antialiased). No RoPE. Optionally ViTDet windows
    with global blocks; feature maps are taken after the requested blocks
    (no final norm), prefix tokens dropped.

    Like the official DINOv2 models, ``pos_embed`` holds a class row, added
    to ``cls_token``; register tokens get no position. The ViT machinery
    (arch table, positions, prefix tokens, freezing, layer depth, input
    checks, the dense forward) is :class:`BaseViT`'s; this class adds its
    blocks and their initialisation. Converted weights
    (``tools/model_converters/vit_to_mmapt.py``) give timm's outputs.

    Prefix tokens (class, then registers) attend to the whole image in
    global blocks; in window blocks they attend among themselves and the
    patch tokens within their window (see :class:`ViTBlock`).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'large'``
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
            optionally ``mlp_ratio`` (default 4).
        img_size (int | tuple): As in :class:`BaseViT`. Defaults to 518.
        patch_size (int): Patch size in pixels. Defaults to 14.
        pretrain_img_size (int): Pretraining image size. Defaults to 518.
        pretrain_patch_size (int): Pretraining patch size. Defaults to 14.
            ``pretrain_img_size // pretrain_patch_size`` is the grid of the
            stored position table (37 for DINOv2).
        use_cls_token (bool): Prepend a class token. Defaults to True.
        layer_scale (bool): LayerScale after attention and MLP (DINOv2: on).
            Defaults to True.
        layer_scale_init (float): Initial LayerScale value without a
            checkpoint. Defaults to 1e-5.
        position_grid (str): ``'input'``: the position table is resampled
            to each input's grid, as timm and DINOv2 do (the default, what
            the timm parity holds for). ``'nominal'``: resampled to the
            nominal grid ``img_size / patch_size`` and cropped, like
            :class:`EVA02` (content keeps its canvas position when padding
            is dropped); see :meth:`BaseViT.nominal_grid`. The two agree for
            inputs of ``img_size``.
        **kwargs: :class:`BaseViT` arguments: ``num_register_tokens``
            (register tokens after the class token, DINOv2 ``reg4``: 4;
            default 0), ``window_size``, ``global_attn_indexes``,
            ``out_indices``, ``drop_path_rate``, ``frozen_stages``,
            ``with_cp``, and ``init_cfg``, e.g. ``dict(type='Pretrained',
            checkpoint=...)`` with a file written by
            ``tools/model_converters/vit_to_mmapt.py``.
    """

    arch_zoo: Dict[str, dict] = {
        'tiny': dict(embed_dims=192, num_layers=12, num_heads=3),
        'small': dict(embed_dims=384, num_layers=12, num_heads=6),
        'base': dict(embed_dims=768, num_layers=12, num_heads=12),
        'large': dict(embed_dims=1024, num_layers=24, num_heads=16),
    }
    arch_defaults = dict(mlp_ratio=4.)
    pos_antialias = True

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 518,
                 patch_size: int = 14,
                 pretrain_img_size: int = 518,
                 pretrain_patch_size: int = 14,
                 use_cls_token: bool = True,
                 layer_scale: bool = True,
                 layer_scale_init: float = 1e-5,
                 position_grid: str = 'input',
                 **kwargs) -> None:
        self.layer_scale_init = layer_scale_init if layer_scale else None
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            pos_embed_grid=pretrain_img_size // pretrain_patch_size,
            use_cls_token=use_cls_token,
            position_grid=position_grid,
            **kwargs)

    def build_blocks(self, drop_rates: List[float]) -> nn.ModuleList:
        """:class:`ViTBlock` blocks (GELU MLP, optional LayerScale)."""
        hidden = int(self.embed_dims * self.arch_settings['mlp_ratio'])
        return nn.ModuleList([
            ViTBlock(
                self.embed_dims,
                self.arch_settings['num_heads'],
                hidden,
                window_size=self.block_window_size(i),
                layer_scale_init=self.layer_scale_init,
                drop_path=rate,
                norm_eps=self.norm_eps) for i, rate in enumerate(drop_rates)
        ])

    def _init_params(self) -> None:
        """timm's ViT initialisation: :meth:`BaseViT._init_params` with the
        prefix tokens drawn from N(0, 1e-6)."""
        super()._init_params()
        for token in (self.cls_token, self.register_tokens):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
