"""BaseViT: what every plain ViT backbone for dense prediction shares.

A family (:class:`~mmapt.models.backbones.EVA02`,
:class:`~mmapt.models.backbones.ViT`) adds only its blocks
(:meth:`BaseViT.build_blocks`), optionally a RoPE (:meth:`BaseViT.build_rope`)
and its initialisation. Everything else lives here: the arch table, output
indices, the absolute position table and the grid positions are defined on,
prefix (class / register) tokens, freezing, layer depth for layer decay,
input checks, the dense forward and the token-count notification. A
:class:`BaseViT` satisfies :class:`~mmapt.models.apt.APTHost`, so
``class APTMyViT(APTBackboneMixin, MyViT)`` is the APT version of any
family.
"""
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

from mmapt.checkpoints.checkpoint_fit import checked_pretrained_init
from mmapt.models.stages import StageMarks, forward_stage
from ..layers import (DenseContext, ParamCache, PatchEmbed, identity_rope,
                      pos_embed_map, resize_pos_embed)
from ..layers.attention import AttentionObservable
from ..layers.inputs import check_image_batch
from .accelerate import Accelerator, check_accelerate
from .token_observer import TokenObservable

#: Where absolute positions are defined, see :meth:`BaseViT.nominal_grid`.
POSITION_GRIDS = ('nominal', 'input')


def to_2tuple(value: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``7`` -> ``(7, 7)``; a pair stays a pair."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2:
        raise ValueError(f'expected an int or (h, w), got {value!r}')
    return value  # type: ignore[return-value]


class BaseViT(BaseModule, TokenObservable, StageMarks, AttentionObservable):
    """A plain ViT for dense prediction, without its blocks.

    Subclasses set ``arch_zoo`` (and ``arch_defaults``), implement
    :meth:`build_blocks` and may override :meth:`build_rope` and
    :meth:`_init_params`; block options they need are stored on ``self``
    before calling ``super().__init__``.

    Args:
        arch (str | dict): A key of ``arch_zoo`` or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` (and the family's
            optional settings, ``arch_defaults``).
        img_size (int | tuple): Nominal input size: the canvas positions are
            defined on (:meth:`nominal_grid`), and a warning at build time
            when inputs of this size would be refused.
        patch_size (int): Patch size in pixels.
        pos_embed_grid (int): Side of the stored absolute position table.
        window_size (int): Window side in tokens for window attention; 0 =
            global attention in every block. Defaults to 0.
        global_attn_indexes (Sequence[int]): Blocks with global attention
            when ``window_size > 0``. Defaults to ().
        out_indices (Sequence[int] | int): Blocks whose outputs are returned;
            negative values count from the end. Defaults to (-1, ).
        drop_path_rate (float): Stochastic depth, linearly increasing over the
            blocks. Defaults to 0.
        use_cls_token (bool): A class token ``cls_token`` (1, 1, C) first in
            the sequence and a class row first in ``pos_embed``. Defaults to
            False.
        num_register_tokens (int): Register tokens ``register_tokens``
            (1, R, C) after the class token, without position. Defaults to 0.
        position_grid (str): ``'nominal'``: the position table is resampled
            to :meth:`nominal_grid` and cropped (a token keeps its canvas
            position when padding is dropped). ``'input'``: resampled to each
            input's grid (timm, DINOv2). Defaults to ``'nominal'``.
        frozen_stages (int): Freeze the embeddings (stage 0) and the first
            ``frozen_stages`` blocks; -1 freezes nothing. Defaults to -1.
        with_cp (bool): Gradient checkpointing of every block while
            training. Defaults to False.
        accelerate (str, optional): Inference forwards (eval mode, no
            autograd) through ``'compile'`` (``torch.compile``, inductor,
            one compiled graph per input shape; CPU and GPU) or
            ``'cuda_graphs'`` (one captured CUDA graph per input shape; on
            a CPU it logs one line and runs eager). APT backbones compile
            or capture their static-shape forward per token bucket.
            Training forwards are unchanged. Settable later
            (``backbone.accelerate = 'compile'``). Defaults to None.
        init_cfg (dict | list[dict], optional): mmengine init config.
    """

    arch_zoo: Dict[str, dict] = {}
    #: Settings an ``arch`` dict may leave out.
    arch_defaults: Dict[str, Any] = {}
    norm_eps = 1e-6
    #: Antialiased bicubic resampling of the position table (timm's
    #: ``resample_abs_pos_embed``); EVA-02's detection code does without.
    pos_antialias = False
    #: The embedding: layer depth 0 for layer decay, frozen with stage 0.
    #: First name components under the backbone; a subclass that adds an
    #: embedding part extends the tuple.
    embedding_names: Tuple[str, ...] = ('patch_embed', 'pos_embed',
                                        'cls_token', 'register_tokens')

    def __init__(self,
                 arch: Union[str, dict],
                 img_size: Union[int, Sequence[int]],
                 patch_size: int,
                 pos_embed_grid: int,
                 window_size: int = 0,
                 global_attn_indexes: Sequence[int] = (),
                 out_indices: Union[int, Sequence[int]] = (-1, ),
                 drop_path_rate: float = 0.,
                 use_cls_token: bool = False,
                 num_register_tokens: int = 0,
                 position_grid: str = 'nominal',
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 accelerate: Optional[str] = None,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.accelerate = accelerate
        if window_size < 0:
            raise ValueError(f'window_size must be >= 0 (0 = no windows), '
                             f'got {window_size}')
        if num_register_tokens < 0:
            raise ValueError('num_register_tokens must be >= 0, got '
                             f'{num_register_tokens}')
        if position_grid not in POSITION_GRIDS:
            raise ValueError(f'position_grid must be one of {POSITION_GRIDS}'
                             f', got {position_grid!r}')
        self.arch_settings = self._parse_arch(arch)
        self.embed_dims = embed_dims = self.arch_settings['embed_dims']
        self.num_layers = num_layers = self.arch_settings['num_layers']
        self.patch_size = patch_size
        self.img_size = to_2tuple(img_size)
        self.window_size = window_size
        self.global_attn_indexes = tuple(i % num_layers
                                         for i in global_attn_indexes)
        self.out_indices = self._parse_out_indices(out_indices, num_layers)
        self.position_grid = position_grid
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        self.num_prefix_tokens = int(use_cls_token) + num_register_tokens
        self.patch_embed = PatchEmbed(patch_size, embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, embed_dims)) if use_cls_token else None
        self.register_tokens = nn.Parameter(
            torch.zeros(1, num_register_tokens,
                        embed_dims)) if num_register_tokens else None
        self.pos_grid = (pos_embed_grid, pos_embed_grid)
        self.pos_embed = nn.Parameter(
            torch.zeros(1,
                        int(use_cls_token) + pos_embed_grid**2, embed_dims))
        self.rope = self.build_rope()
        # On the CPU even under a meta-device context (shape-only builds).
        self.blocks = self.build_blocks(
            torch.linspace(0, drop_path_rate, num_layers,
                           device='cpu').tolist())
        self._pos_cache = ParamCache()
        self._init_params()
        self.warn_img_size(self.check_input_size)
        self._register_load_state_dict_pre_hook(self._resize_pos_embed_hook)
        self._freeze_stages()

    # ------------------------------------------------------------------ build
    def build_blocks(self, drop_rates: List[float]) -> nn.ModuleList:
        """The family's blocks, one per ``drop_rates`` entry (its stochastic
        depth); each with a ``window_size`` (:meth:`block_window_size`), a
        dense ``block(x, DenseContext)`` and ``forward_packed(x,
        PackedContext)``."""
        raise NotImplementedError(
            f'{type(self).__name__} must implement build_blocks')

    def build_rope(self) -> Optional[nn.Module]:
        """The family's rotary position embedding (a callable
        ``rope(coords, grid_len)`` with ``rope.grid(rows, cols, device,
        grid_len)``, e.g. ``RotaryEmbedding2D``); None without RoPE."""
        return None

    def block_window_size(self, index: int) -> int:
        """Window side of block ``index``: 0 for global blocks."""
        if self.window_size > 0 and index not in self.global_attn_indexes:
            return self.window_size
        return 0

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

    def _init_params(self) -> None:
        """timm's initialisation (used when no checkpoint is given):
        truncated normal positions, prefix tokens and linear weights, zero
        biases."""
        trunc_normal_(self.pos_embed, std=.02)
        for token in (self.cls_token, self.register_tokens):
            if token is not None:
                trunc_normal_(token, std=.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def init_weights(self) -> None:
        """mmengine's initialisation; a ``Pretrained`` checkpoint that does
        not fit this backbone (other block count or width, other shapes,
        under half of the tensors) is refused before anything is copied:
        ``init_cfg=dict(type='Pretrained', ..., allow_partial=True)``
        loads what fits instead."""
        with checked_pretrained_init(self):
            super().init_weights()

    def warn_img_size(self, check: Callable[[int, int], Any]) -> None:
        """Log a warning when ``check(*img_size)`` refuses the nominal
        input size (build time: the error itself comes at forward)."""
        try:
            check(*self.img_size)
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
        """Freeze ``embedding_names`` (those that exist) and the first
        ``frozen_stages`` blocks."""
        if self.frozen_stages < 0:
            return
        parts = [getattr(self, name, None) for name in self.embedding_names]
        parts += list(self.blocks[:self.frozen_stages])
        for part in parts:
            if isinstance(part, nn.Parameter):
                part.requires_grad = False
            elif isinstance(part, nn.Module):
                part.eval()
                part.requires_grad_(False)

    def train(self, mode: bool = True) -> 'BaseViT':
        super().train(mode)
        self._freeze_stages()
        if mode:  # the weights will change: graphs read them by address
            self.__dict__.get('_accelerators', {}).pop('cuda_graphs', None)
        return self

    # ------------------------------------------------------------ accelerate
    @property
    def accelerate(self) -> Optional[str]:
        """None, ``'compile'`` or ``'cuda_graphs'`` (see the class)."""
        return self.__dict__.get('_accelerate')

    @accelerate.setter
    def accelerate(self, value: Optional[str]) -> None:
        object.__setattr__(self, '_accelerate', check_accelerate(value))
        if '_accelerators' not in self.__dict__:
            object.__setattr__(self, '_accelerators', {})

    def accelerator(self, mode: Optional[str] = None) -> Optional[Accelerator]:
        """The :class:`~mmapt.models.backbones.accelerate.Accelerator` of
        ``mode`` (default: the current ``accelerate``; the forwards are
        kept per mode), or None without a mode."""
        mode = check_accelerate(mode) or self.accelerate
        if mode is None:
            return None
        if mode not in self._accelerators:
            self._accelerators[mode] = Accelerator(mode, type(self).__name__)
        return self._accelerators[mode]

    def run_accelerated(
            self, key: tuple, make_fn: Callable[[], Callable[..., Any]],
            inputs: Sequence[Tensor]) -> Optional[Tuple[Tensor, ...]]:
        """The accelerated forward of ``key`` on ``inputs``; None when
        this call runs eager (see :meth:`accelerating`)."""
        if not self.accelerating(inputs[0].device):
            return None
        return self.accelerator()(self, key, make_fn, inputs)

    def accelerating(self, device: torch.device) -> bool:
        """Whether a forward on ``device`` runs accelerated: ``accelerate``
        set, eval mode, autograd off, not inside an outer
        ``torch.compile``, and the mode available on ``device``."""
        accelerator = self.accelerator()
        return accelerator is not None and not self.training and \
            not torch.is_grad_enabled() and \
            not torch.compiler.is_compiling() and \
            accelerator.available(device)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .half() / .cuda() make new weights: the graphs and
        # compiled forwards were made for the old ones.
        self.__dict__.get('_accelerators', {}).clear()
        return super()._apply(fn, *args, **kwargs)

    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = 'backbone.') -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise learning-rate decay.

        Args:
            param_name (str): Parameter name, with or without ``prefix``.
            prefix (str): Prefix of the backbone in the full model.

        Returns:
            tuple[int, int]: ``(layer_id, num_layers + 2)``: the embedding
            (``embedding_names``) 0, ``blocks.i`` ``i + 1``, anything else
            ``num_layers + 1``.
        """
        num_total = self.num_layers + 2
        if prefix and param_name.startswith(prefix):
            param_name = param_name[len(prefix):]
        first = param_name.split('.', 1)[0]
        if first in self.embedding_names:
            return 0, num_total
        if first == 'blocks':
            return int(param_name.split('.')[1]) + 1, num_total
        return self.num_layers + 1, num_total

    # -------------------------------------------------------------- positions
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

        With ``position_grid='nominal'`` it is ``img_size / patch_size`` (the
        training canvas), extended on an axis where the input is larger.
        Absolute positions and the RoPE of global blocks are evaluated on it
        and cropped to the input's top-left ``grid`` cells: a content token
        keeps the position it has on the padded canvas however much
        bottom/right padding (the side mmdet and mmseg pad) is dropped,
        instead of the whole input being stretched onto the pretraining
        grid. With ``position_grid='input'`` it is ``grid`` itself.
        """
        if self.position_grid == 'input':
            return tuple(grid)  # type: ignore[return-value]
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
        """(B, P, C): the class token with its position row, then the
        register tokens (no position); None without any."""
        params = [
            p for p in (self.cls_token, self.register_tokens) if p is not None
        ]
        if not params:
            return None

        def compute() -> Tensor:
            tokens = []
            if self.cls_token is not None:
                tokens.append(self.cls_token + self.pos_embed[:, :1])
            if self.register_tokens is not None:
                tokens.append(self.register_tokens)
            return torch.cat(tokens, dim=1)

        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            table = compute()  # training: the gradient reaches the tokens
        else:
            # At inference the (1, P, C) table is a constant: cached like
            # the position maps, keyed on the token parameters too (three
            # ops fewer per forward).
            versions = tuple((p._version, p.data_ptr()) for p in params)
            table = self._pos_cache.get(self.pos_embed, ('prefix', versions),
                                        compute)
        return table.expand(batch, -1, -1)

    def _cached_position(self, name: str, grid: Tuple[int, int],
                         compute: Callable[[], Any]) -> Any:
        """``compute()``, cached while the position table is unchanged (at
        inference: bicubic resampling costs about a patch embedding)."""
        return self._pos_cache.get(self.pos_embed, (name, tuple(grid)),
                                   compute)

    # ---------------------------------------------------------------- forward
    def embed_tokens(self, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """(B, 3, H, W) -> (B, P + H / p * W / p, C): prefix tokens, then
        the patch embeddings with their positions, row-major."""
        tokens = self.patch_embed(x) + self.position_map(grid).permute(
            0, 2, 3, 1)
        tokens = tokens.flatten(1, 2)
        prefix = self.prefix_tokens(x.shape[0])
        if prefix is None:
            return tokens
        return torch.cat([prefix, tokens], dim=1)

    def dense_context(self, grid: Tuple[int, int],
                      device: torch.device) -> DenseContext:
        """What every dense block needs: grid, prefix count, RoPE tables
        (identity rows for prefix tokens)."""
        ctx = DenseContext(
            grid=tuple(grid), num_prefix_tokens=self.num_prefix_tokens)
        if self.rope is None:
            return ctx
        ctx.image_rope = self.rope.grid(*grid, device, self.nominal_grid(grid))
        if self.window_size:
            ctx.window_rope = self.rope.grid(self.window_size,
                                             self.window_size, device)
        if self.num_prefix_tokens:
            # cos 1, sin 0 rotates nothing.
            ctx.prefix_rope = identity_rope(self.num_prefix_tokens,
                                            ctx.image_rope)
            ctx.image_rope = torch.cat([ctx.prefix_rope, ctx.image_rope])
        return ctx

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C, H / p, W / p) map per out index;
        compiled / graphed per input shape with ``accelerate``."""
        check_image_batch(x, self.patch_embed.proj.weight.dtype)
        if self.accelerate is not None:
            self.check_input_size(*x.shape[2:])
            outs = self.run_accelerated(('dense', tuple(x.shape), x.dtype),
                                        lambda: self.forward_dense, (x, ))
            if outs is not None:
                return outs
        return self.forward_dense(x)

    def forward_dense(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The eager forward of :meth:`forward`."""
        grid = self.check_input_size(*x.shape[2:])
        with forward_stage(self, 'embedding'):
            tokens = self.embed_tokens(x, grid)
            ctx = self.dense_context(grid, x.device)
        with forward_stage(self, 'blocks'):
            outs = self.forward_blocks(tokens, ctx)
        with forward_stage(self, 'unpack'):  # as the APT adapter reports them
            cells = torch.full((x.shape[0], ),
                               grid[0] * grid[1],
                               dtype=torch.int64,
                               device=x.device)
            self.notify_tokens(cells, cells)  # prefix tokens not counted
        return outs

    def forward_blocks(self, x: Tensor,
                       ctx: DenseContext) -> Tuple[Tensor, ...]:
        """The blocks on dense (B, P + L, C) tokens -> the (B, C, H, W) maps
        of the ``out_indices`` blocks, in ``out_indices`` order."""
        batch, num_prefix = x.shape[0], ctx.num_prefix_tokens
        wanted = set(self.out_indices)
        maps = {}
        for i, block in enumerate(self.blocks):
            if self.with_cp and self.training and x.requires_grad:
                x = checkpoint(block, x, ctx, use_reentrant=False)
            else:
                x = block(x, ctx)
            if i in wanted:
                with forward_stage(self, 'unpack'):  # nested: counted apart
                    maps[i] = x[:, num_prefix:].transpose(1, 2).reshape(
                        batch, self.embed_dims, *ctx.grid)
        return tuple(maps[i] for i in self.out_indices)
