"""Plain DINOv2-style ViT backbone for dense prediction (ViTDet style)."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmapt.registry import MODELS
from mmapt.utils.stages import forward_stage
from ..layers import ViTBlock
from .eva02 import EVA02


@MODELS.register_module()
class ViT(EVA02):
    """DINOv2-style vision transformer for dense prediction.

    The architecture of timm's ``vit_*_patch14_dinov2`` and
    ``vit_*_patch14_reg4_dinov2`` and of the official DINOv2 models: fused
    ``qkv`` with bias, GELU MLP, LayerScale, a class token, optional register
    tokens, and an absolute position table stored at the pretraining grid
    (DINOv2: 37 x 37 = 518 px / 14) and resampled to each input's grid as
    timm does (bicubic, antialiased). No RoPE. Optionally ViTDet windows
    with global blocks; feature maps are taken after the requested blocks
    (no final norm), prefix tokens dropped.

    Like the official DINOv2 models (and :class:`EVA02` with a class
    token), ``pos_embed`` holds a class row, added to ``cls_token``; register
    tokens get no position. The ViT machinery (arch table, positions,
    freezing, layer depth, input checks) is :class:`EVA02`'s; this class
    swaps the blocks and adds the register tokens. Converted weights
    (``tools/model_converters/vit_to_mmapt.py``) give timm's outputs.

    Prefix tokens (class, then registers) attend to the whole image in
    global blocks; in window blocks they attend among themselves and the
    patch tokens within their window (see :class:`ViTBlock`).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``, ``'large'``
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads`` and
            optionally ``mlp_ratio`` (default 4).
        img_size, window_size, global_attn_indexes, out_indices,
            drop_path_rate, frozen_stages, with_cp: As in :class:`EVA02`;
            ``img_size`` defaults to 518 here, ``frozen_stages`` also
            freezes the class and register tokens with stage 0.
        patch_size (int): Patch size in pixels. Defaults to 14.
        pretrain_img_size (int): Pretraining image size. Defaults to 518.
        pretrain_patch_size (int): Pretraining patch size. Defaults to 14.
            ``pretrain_img_size // pretrain_patch_size`` is the grid of the
            stored position table (37 for DINOv2).
        use_cls_token (bool): Prepend a class token. Defaults to True.
        num_register_tokens (int): Register tokens after the class token
            (DINOv2 ``reg4``: 4). Defaults to 0.
        layer_scale (bool): LayerScale after attention and MLP (DINOv2: on).
            Defaults to True.
        layer_scale_init (float): Initial LayerScale value without a
            checkpoint. Defaults to 1e-5.
        position_grid (str): ``'input'``: the position table is resampled
            to each input's grid, as timm and DINOv2 do (the default, what
            the timm parity holds for). ``'nominal'``: resampled to the
            nominal grid ``img_size / patch_size`` and cropped, like
            :class:`EVA02` (content keeps its canvas position when padding
            is dropped). The two agree for inputs of ``img_size``.
        init_cfg (dict | list[dict], optional): e.g.
            ``dict(type='Pretrained', checkpoint=...)`` with a file written
            by ``tools/model_converters/vit_to_mmapt.py``.
        **kwargs: Further :class:`EVA02` arguments.
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
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 out_indices: Union[int, Sequence[int]] = (-1, ),
                 drop_path_rate: float = 0.,
                 pretrain_img_size: int = 518,
                 pretrain_patch_size: int = 14,
                 use_cls_token: bool = True,
                 num_register_tokens: int = 0,
                 layer_scale: bool = True,
                 layer_scale_init: float = 1e-5,
                 position_grid: str = 'input',
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 **kwargs) -> None:
        if position_grid not in ('input', 'nominal'):
            raise ValueError("position_grid must be 'input' or 'nominal', "
                             f'got {position_grid!r}')
        self.position_grid = position_grid
        if num_register_tokens < 0:
            raise ValueError('num_register_tokens must be >= 0, got '
                             f'{num_register_tokens}')
        self.num_register_tokens = num_register_tokens
        self.layer_scale_init = layer_scale_init if layer_scale else None
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            window_size=window_size,
            global_attn_indexes=global_attn_indexes,
            out_indices=out_indices,
            drop_path_rate=drop_path_rate,
            pretrain_img_size=pretrain_img_size,
            pretrain_patch_size=pretrain_patch_size,
            use_cls_token=use_cls_token,
            frozen_stages=frozen_stages,
            with_cp=with_cp,
            init_cfg=init_cfg,
            **kwargs)

    # ------------------------------------------------------------------ build
    def _build_layers(self, drop_rates: List[float]) -> None:
        """Register tokens and :class:`ViTBlock` blocks; no RoPE.

        The class token and its position row are :class:`EVA02`'s.
        """
        dims = self.embed_dims
        self.rope = None
        self.register_tokens = nn.Parameter(
            torch.zeros(1, self.num_register_tokens, dims)) \
            if self.num_register_tokens else None
        # Read by the APT adapter (built next, in _init_extra).
        self.num_prefix_tokens += self.num_register_tokens
        hidden = int(dims * self.arch_settings['mlp_ratio'])
        self.blocks = nn.ModuleList([
            ViTBlock(
                dims,
                self.arch_settings['num_heads'],
                hidden,
                window_size=self._block_window(i),
                layer_scale_init=self.layer_scale_init,
                drop_path=drop_rates[i],
                norm_eps=self.norm_eps) for i in range(self.num_layers)
        ])

    def _init_params(self) -> None:
        """timm's ViT initialisation (used when no checkpoint is given)."""
        trunc_normal_(self.pos_embed, std=.02)
        for token in (self.cls_token, self.register_tokens):
            if token is not None:
                nn.init.normal_(token, std=1e-6)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0 and self.register_tokens is not None:
            self.register_tokens.requires_grad = False

    # ---------------------------------------------------------------- forward
    def nominal_grid(self, grid: Tuple[int, int]) -> Tuple[int, int]:
        """The input's own grid (timm, DINOv2), or with
        ``position_grid='nominal'`` :meth:`EVA02.nominal_grid`."""
        if self.position_grid == 'input':
            return tuple(grid)  # type: ignore[return-value]
        return super().nominal_grid(grid)

    def prefix_tokens(self, batch: int) -> Optional[Tensor]:
        """(B, P, C): the class token with its position row, then the
        register tokens (no position); None without any."""
        cls = super().prefix_tokens(batch)
        if self.register_tokens is None:
            return cls
        registers = self.register_tokens.expand(batch, -1, -1)
        return registers if cls is None else torch.cat([cls, registers], 1)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index."""
        batch = x.shape[0]
        grid = self.check_input_size(*x.shape[2:])
        with forward_stage('embedding'):
            x = self.patch_embed(x) + self.position_map(grid).permute(
                0, 2, 3, 1)
            x = x.flatten(1, 2)
            prefix = self.prefix_tokens(batch)
            if prefix is not None:
                x = torch.cat([prefix, x], dim=1)
        with forward_stage('blocks'):
            outs = self._forward_dense_blocks(x, grid)
        cells = torch.full((batch, ),
                           grid[0] * grid[1],
                           dtype=torch.int64,
                           device=x.device)
        self._notify_tokens(cells, cells)  # prefix tokens not counted
        return self._order_outputs(outs)

    def _forward_dense_blocks(self, x: Tensor,
                              grid: Tuple[int, int]) -> List[Tensor]:
        """Blocks on (B, P + L, C) tokens; maps of the ``out_indices``
        blocks in block order."""
        batch, num_prefix = x.shape[0], self.num_prefix_tokens
        outs = []
        for i, block in enumerate(self.blocks):
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(block, x, grid, num_prefix, use_reentrant=False)
            else:
                x = block(x, grid, num_prefix)
            if i in self.out_indices:
                with forward_stage('unpack'):  # nested: counted apart
                    outs.append(x[:, num_prefix:].transpose(1, 2).reshape(
                        batch, self.embed_dims, *grid))
        return outs
