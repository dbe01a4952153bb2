"""Plain EVA-02 ViT backbone for dense prediction (ViTDet style)."""
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from mmapt.registry import MODELS
from ..layers import EVA02Block, RotaryEmbedding2D
from .base_vit import BaseViT


@MODELS.register_module()
class EVA02(BaseViT):
    """EVA-02 vision transformer for dense prediction.

    A ViTDet-style EVA-02 on :class:`BaseViT` (which holds the positions,
    prefix tokens, freezing and the dense forward): absolute position
    embedding interpolated from the pretraining grid, 2D RoPE (EVA-02
    formula) in every block, SwiGLU MLPs with optional sub-LN, window
    attention in all blocks but ``global_attn_indexes``, and feature maps
    taken after the requested blocks (no final norm).

    With ``use_cls_token`` (the released EVA-02 UperNet models) a class
    token, plus the class row of the position table, is put first in each
    image's sequence; it gets no RoPE, attends with the whole image in
    global blocks (and with itself only in window blocks) and is dropped from
    the outputs.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'large'``
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
            optionally ``mlp_ratio`` (default 4 * 2 / 3), ``scale_mlp``
            (LayerNorm in the SwiGLU, default False) and ``attn_inner_norm``
            (LayerNorm inside attention, default False).
        img_size (int | tuple): Nominal input size; a warning at build time
            when inputs of this size would be refused (not a multiple of
            ``patch_size``, or for APT of the window / largest patch).
            ``forward`` accepts any H, W that are multiples of
            ``patch_size``. Defaults to 1024.
        patch_size (int): Patch size in pixels. Defaults to 16.
        pretrain_img_size (int): Pretraining image size. Defaults to 224.
        pretrain_patch_size (int): Pretraining patch size. Defaults to 14.
            ``pretrain_img_size // pretrain_patch_size`` is RoPE's reference
            grid and, unless ``pos_embed_grid`` is given, the grid of the
            stored position table.
        pos_embed_grid (int, optional): Side of the stored absolute position
            table when it differs from RoPE's reference grid: the released
            EVA-02 detectors keep a 14 x 14 table (224 / 16) with RoPE on
            the 16-grid, and resample the table to the input grid; the
            released UperNet models keep it at the fine-tune grid (32 at
            512, 40 at 640). Defaults to None (the pretraining grid).
        **kwargs: :class:`BaseViT` arguments: ``window_size`` (0 = no
            windows, the default), ``global_attn_indexes``, ``out_indices``,
            ``drop_path_rate``, ``use_cls_token`` (a class token
            ``cls_token`` (1, 1, C) in the sequence and a class row in
            ``pos_embed`` (1, 1 + grid, C); default False),
            ``frozen_stages``, ``with_cp``, and ``init_cfg``, e.g.
            ``dict(type='Pretrained', checkpoint=...)`` for a converted
            checkpoint (``tools/model_converters/eva02_to_mmapt.py``).
    """

    arch_zoo: Dict[str, dict] = {
        'tiny':
        dict(embed_dims=192, num_layers=12, num_heads=3, scale_mlp=False),
        'small':
        dict(embed_dims=384, num_layers=12, num_heads=6, scale_mlp=False),
        'base':
        dict(embed_dims=768, num_layers=12, num_heads=12, scale_mlp=True),
        'large':
        dict(embed_dims=1024, num_layers=24, num_heads=16, scale_mlp=True),
    }
    arch_defaults: Dict[str, Any] = dict(
        mlp_ratio=4 * 2 / 3, scale_mlp=False, attn_inner_norm=False)

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 1024,
                 patch_size: int = 16,
                 pretrain_img_size: int = 224,
                 pretrain_patch_size: int = 14,
                 pos_embed_grid: Optional[int] = None,
                 **kwargs) -> None:
        pretrain_grid = pretrain_img_size // pretrain_patch_size
        self.rope_grid = pretrain_grid  # RoPE's reference grid
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            pos_embed_grid=pos_embed_grid or pretrain_grid,
            **kwargs)

    def build_rope(self) -> RotaryEmbedding2D:
        """EVA-02's 2D RoPE on the pretraining grid."""
        head_dim = self.embed_dims // self.arch_settings['num_heads']
        return RotaryEmbedding2D(head_dim, self.rope_grid)

    def build_blocks(self, drop_rates: List[float]) -> nn.ModuleList:
        """:class:`EVA02Block` blocks (SwiGLU, optional sub-LN)."""
        settings = self.arch_settings
        hidden = int(self.embed_dims * settings['mlp_ratio'])
        return nn.ModuleList([
            EVA02Block(
                self.embed_dims,
                settings['num_heads'],
                hidden,
                window_size=self.block_window_size(i),
                scale_mlp=settings['scale_mlp'],
                attn_inner_norm=settings['attn_inner_norm'],
                drop_path=rate,
                norm_eps=self.norm_eps) for i, rate in enumerate(drop_rates)
        ])

    def _init_params(self) -> None:
        """timm's EVA-02 initialisation: :meth:`BaseViT._init_params` with
        the output projections scaled down by depth."""
        super()._init_params()
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks):
                scale = (2.0 * (layer_id + 1))**0.5
                block.attn.proj.weight.div_(scale)
                block.mlp.w3.weight.div_(scale)
