"""Plain EVA-02 ViT backbone for dense prediction (ViTDet style)."""
import copy
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmapt.registry import MODELS
from mmapt.utils.stages import forward_stage
from ..layers import (EVA02Block, ParamCache, PatchEmbed, RotaryEmbedding2D,
                      pos_embed_map, resize_pos_embed)
from .token_observer import TokenObservable


def _to_2tuple(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f'expected an int or (h, w), got {value!r}')
    return value  # type: ignore[return-value]


@MODELS.register_module()
class EVA02(BaseModule, TokenObservable):
    """EVA-02 vision transformer for dense prediction.

    A ViTDet-style EVA-02: absolute position embedding interpolated from the
    pretraining grid, 2D RoPE (EVA-02 formula) in every block, window
    attention in all blocks but ``global_attn_indexes``, SwiGLU MLPs, and
    feature maps taken after the requested blocks (no final norm).

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
        window_size (int): Window side in tokens for window attention; 0 =
            global attention in every block. Defaults to 0.
        global_attn_indexes (Sequence[int]): Blocks with global attention
            when ``window_size > 0``. Defaults to ().
        out_indices (Sequence[int] | int): Blocks whose outputs are returned;
            negative values count from the end. Defaults to (-1, ).
        drop_path_rate (float): Stochastic depth, linearly increasing over the
            blocks. Defaults to 0.
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
        use_cls_token (bool): A class token ``cls_token`` (1, 1, C) in the
            sequence and a class row in ``pos_embed`` (1, 1 + grid, C).
            Defaults to False.
        frozen_stages (int): Freeze the embeddings (stage 0) and the first
            ``frozen_stages`` blocks; -1 freezes nothing. Defaults to -1.
        with_cp (bool): Gradient checkpointing of every block while
            training. Defaults to False.
        init_cfg (dict | list[dict], optional): mmengine init config, e.g.
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
    # Settings an ``arch`` dict may leave out.
    arch_defaults: Dict[str, Any] = dict(
        mlp_ratio=4 * 2 / 3, scale_mlp=False, attn_inner_norm=False)
    norm_eps = 1e-6
    # Antialiased bicubic resampling of the position table (timm's
    # ``resample_abs_pos_embed``); EVA-02's detection code does without.
    pos_antialias = False

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Sequence[int]] = 1024,
                 patch_size: int = 16,
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 out_indices: Union[int, Sequence[int]] = (-1, ),
                 drop_path_rate: float = 0.,
                 pretrain_img_size: int = 224,
                 pretrain_patch_size: int = 14,
                 pos_embed_grid: Optional[int] = None,
                 use_cls_token: bool = False,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        dims = self.arch_settings['embed_dims']
        num_layers = self.arch_settings['num_layers']
        self.embed_dims = dims
        self.num_layers = num_layers
        self.patch_size = patch_size
        self.img_size = _to_2tuple(img_size)
        if window_size < 0:
            raise ValueError(f'window_size must be >= 0, got {window_size}')
        self.window_size = window_size
        self.global_attn_indexes = tuple(i % num_layers
                                         for i in global_attn_indexes)
        self.out_indices = self._parse_out_indices(out_indices, num_layers)
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        pretrain_grid = pretrain_img_size // pretrain_patch_size
        table_grid = pos_embed_grid or pretrain_grid
        self.pos_grid = (table_grid, table_grid)
        self.num_prefix_tokens = int(use_cls_token)
        self.patch_embed = PatchEmbed(patch_size, dims)
        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, dims)) if use_cls_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + table_grid**2, dims))
        self.rope_grid = pretrain_grid  # RoPE's reference grid
        # On the CPU even under a meta-device context (shape-only builds).
        self._build_layers(
            torch.linspace(0, drop_path_rate, num_layers,
                           device='cpu').tolist())
        self._pos_cache = ParamCache()
        self._init_params()
        self._init_extra()
        self._check_img_size()
        self._register_load_state_dict_pre_hook(self._resize_pos_embed_hook)
        self._freeze_stages()

    # ------------------------------------------------------------------ build
    def _build_layers(self, drop_rates: List[float]) -> None:
        """RoPE and the blocks (``drop_rates``: stochastic depth per block).

        Other block families (:class:`ViT`) override this.
        """
        dims = self.embed_dims
        num_heads = self.arch_settings['num_heads']
        self.rope = RotaryEmbedding2D(dims // num_heads, self.rope_grid)
        hidden = int(dims * self.arch_settings['mlp_ratio'])
        self.blocks = nn.ModuleList([
            EVA02Block(
                dims,
                num_heads,
                hidden,
                window_size=self._block_window(i),
                scale_mlp=self.arch_settings['scale_mlp'],
                attn_inner_norm=self.arch_settings['attn_inner_norm'],
                drop_path=drop_rates[i],
                norm_eps=self.norm_eps) for i in range(self.num_layers)
        ])

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                raise ValueError(f'arch {arch!r} is not one of '
                                 f'{sorted(self.arch_zoo)} (or a dict)')
            settings = copy.deepcopy(self.arch_zoo[arch.lower()])
        elif isinstance(arch, dict):
            required = {'embed_dims', 'num_layers', 'num_heads'}
            missing = required - set(arch)
            if missing:
                raise ValueError(f'arch dict needs keys {sorted(required)}, '
                                 f'missing {sorted(missing)}')
            settings = copy.deepcopy(arch)
        else:
            raise TypeError(f'arch must be a str or dict, got {type(arch)}')
        for key, value in self.arch_defaults.items():
            settings.setdefault(key, value)
        # Fused or separate qkv only changes checkpoint keys (the converter
        # handles it); accepted for configs written against timm names.
        settings.pop('qkv_fused', None)
        return settings

    @staticmethod
    def _parse_out_indices(out_indices: Union[int, Sequence[int]],
                           num_layers: int) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        result = []
        for index in out_indices:
            if not -num_layers <= index < num_layers:
                raise ValueError(f'out index {index} is out of range for '
                                 f'{num_layers} blocks')
            result.append(index % num_layers)
        return tuple(result)

    def _block_window(self, index: int) -> int:
        if self.window_size > 0 and index not in self.global_attn_indexes:
            return self.window_size
        return 0

    def _init_params(self) -> None:
        """timm's EVA-02 initialisation (used when no checkpoint is given)."""
        trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks):
                scale = (2.0 * (layer_id + 1))**0.5
                block.attn.proj.weight.div_(scale)
                block.mlp.w3.weight.div_(scale)

    def _init_extra(self) -> None:
        """Build subclass modules (called before stages are frozen)."""

    def _check_img_size(self) -> None:
        """Warn early when the nominal input size would be refused."""
        try:
            self.check_input_size(*self.img_size)
        except ValueError as err:
            MMLogger.get_current_instance().warning(
                f'{type(self).__name__}: img_size {self.img_size}: {err}')

    def _resize_pos_embed_hook(self, state_dict: dict, prefix: str, *args,
                               **kwargs) -> None:
        """Resample an incoming position table of another grid to ours.

        An incoming class row is kept when this model has a class token
        (dropped otherwise); a table without one keeps this model's row.
        """
        name = prefix + 'pos_embed'
        if name not in state_dict or \
                state_dict[name].shape == self.pos_embed.shape:
            return
        table = state_dict[name]
        grid = resize_pos_embed(
            table, self.pos_grid, antialias=self.pos_antialias)
        if self.cls_token is not None:
            has_row = math.isqrt(table.shape[1])**2 != table.shape[1]
            row = table[:, :1] if has_row else \
                self.pos_embed.detach()[:, :1].to(table.dtype)
            grid = torch.cat([row, grid], dim=1)
        state_dict[name] = grid

    # --------------------------------------------------------------- training
    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.patch_embed, *self.embedding_modules()]
        frozen += list(self.blocks[:self.frozen_stages])
        self.pos_embed.requires_grad = False
        if self.cls_token is not None:
            self.cls_token.requires_grad = False
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def embedding_modules(self) -> List[nn.Module]:
        """Extra embedding modules of subclasses (frozen with stage 0)."""
        return []

    def train(self, mode: bool = True) -> 'EVA02':
        super().train(mode)
        self._freeze_stages()
        return self

    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = 'backbone.') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        Args:
            param_name (str): Parameter name, with or without ``prefix``.
            prefix (str): Prefix of the backbone in the full model.

        Returns:
            tuple[int, int]: ``(layer_id, num_layers + 2)``: embeddings 0,
            ``blocks.i`` ``i + 1``, anything else ``num_layers + 1``.
        """
        num_total = self.num_layers + 2
        if prefix and param_name.startswith(prefix):
            param_name = param_name[len(prefix):]
        if param_name.startswith(
            ('patch_embed', 'pos_embed', 'apt_embed', 'cls_token',
             'register_tokens', 'mask_token')):
            return 0, num_total
        if param_name.startswith('blocks.'):
            return int(param_name.split('.')[1]) + 1, num_total
        return self.num_layers + 1, num_total

    # ---------------------------------------------------------------- forward
    def check_input_size(self, height: int, width: int) -> Tuple[int, int]:
        """Base grid of an input, or a ValueError naming the multiple."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f'input {height}x{width} must be a multiple of the patch size '
                f'{self.patch_size}; set pad_size_divisor (mmdet) or '
                f'size_divisor (mmseg) to a multiple of it')
        return height // self.patch_size, width // self.patch_size

    def nominal_grid(self, grid: Tuple[int, int]) -> Tuple[int, int]:
        """The grid positions are defined on, for an input of ``grid`` cells.

        It is ``img_size / patch_size`` (the training canvas), extended on
        an axis where the input is larger. Absolute positions and the RoPE
        of global blocks are evaluated on it and cropped to the input's
        top-left ``grid`` cells: a content token keeps the position it has
        on the padded canvas however much bottom/right padding (the side
        mmdet and mmseg pad) is dropped, instead of the whole input being
        stretched onto the pretraining grid.
        """
        return (max(self.img_size[0] // self.patch_size,
                    grid[0]), max(self.img_size[1] // self.patch_size,
                                  grid[1]))

    def position_map(self, grid: Tuple[int, int]) -> Tensor:
        """(1, C, rows, cols) absolute position embedding at ``grid``: the
        table resampled to :meth:`nominal_grid` and cropped."""
        nominal = self.nominal_grid(grid)
        return self._cached_position(
            'map', grid, lambda: pos_embed_map(
                self.pos_embed[:, self.num_class_rows:], self.pos_grid,
                nominal, self.pos_antialias)[:, :, :grid[0], :grid[1]])

    @property
    def num_class_rows(self) -> int:
        """Rows of ``pos_embed`` before the grid: 1 with a class token."""
        return int(self.cls_token is not None)

    def prefix_tokens(self, batch: int) -> Optional[Tensor]:
        """(B, P, C) class token with its position row; None without."""
        if self.cls_token is None:
            return None
        return (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)

    def _cached_position(self, name: str, grid: Tuple[int, int],
                         compute: Callable[[], Any]) -> Any:
        """``compute()``, cached while the position table is unchanged (at
        inference: bicubic resampling costs about a patch embedding)."""
        return self._pos_cache.get(self.pos_embed, (name, tuple(grid)),
                                   compute)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index."""
        batch = x.shape[0]
        height, width = self.check_input_size(*x.shape[2:])
        with forward_stage('embedding'):
            # (B, H, W, C) channels-last tokens for the blocks.
            x = self.patch_embed(x) + self.position_map(
                (height, width)).permute(0, 2, 3, 1)
            prefix = self.prefix_tokens(batch)
            global_rope = self.rope.grid(height, width, x.device,
                                         self.nominal_grid((height, width)))
            window_rope = self.rope.grid(
                self.window_size, self.window_size,
                x.device) if self.window_size else None
        with forward_stage('blocks'):
            return self._forward_dense_blocks(x, prefix, global_rope,
                                              window_rope)

    def _forward_dense_blocks(self, x: Tensor, prefix: Optional[Tensor],
                              global_rope: Tensor,
                              window_rope: Optional[Tensor]
                              ) -> Tuple[Tensor, ...]:
        batch, height, width = x.shape[:3]
        outs = []
        for i, block in enumerate(self.blocks):
            args = (x, window_rope if block.window_size else global_rope)
            if prefix is not None:
                args += (prefix, )
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
            if prefix is not None:
                x, prefix = x
            if i in self.out_indices:
                with forward_stage('unpack'):  # nested: counted apart
                    outs.append(x.permute(0, 3, 1, 2).contiguous())
        cells = torch.full((batch, ),
                           height * width,
                           dtype=torch.int64,
                           device=x.device)
        self._notify_tokens(cells, cells)
        return self._order_outputs(outs)

    def _order_outputs(self, outs: List[Tensor]) -> Tuple[Tensor, ...]:
        """Outputs in ``out_indices`` order (collected in block order)."""
        collected = sorted(set(self.out_indices))
        return tuple(outs[collected.index(i)] for i in self.out_indices)
