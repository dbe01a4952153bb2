"""APTHost: what :class:`~mmapt.models.apt.APTAdapter` reads from its
backbone, as code.

Every :class:`~mmapt.models.backbones.base_vit.BaseViT` satisfies it
(``isinstance(EVA02(...), APTHost)``); a ViT written without the base
satisfies it by providing these members. ``isinstance`` checks only that
the members exist; their meaning is given here.
"""
from typing import List, Optional, Protocol, Sequence, Tuple, runtime_checkable

from torch import Tensor, nn

from ..layers import PatchEmbed


@runtime_checkable
class APTHost(Protocol):
    """A plain ViT backbone the APT adapter can drive.

    Attributes:
        patch_size (int): Base patch side in pixels.
        embed_dims (int): Token channels C.
        window_size (int): Window side in base cells; 0 = no windows. Each
            block says for itself whether it uses them (its own
            ``window_size``, 0 in global blocks).
        out_indices (tuple[int]): Blocks whose outputs are returned, in
            output order (non-negative).
        with_cp (bool): Gradient checkpointing of the blocks while training.
        training (bool): ``nn.Module.training``.
        num_prefix_tokens (int): Class / register tokens put first in each
            image's sequence (P).
        patch_embed (PatchEmbed): Base patch embedding, (B, 3, H, W) ->
            channels-last (B, H / p, W / p, C), and ``embed_patches``.
        pos_embed (Tensor, optional): The parameter :meth:`position_map`
            derives from (a cache key), or None without absolute positions.
        rope (nn.Module, optional): ``rope(coords (N, 2), grid_len) ->
            (N, head_dim / 2)`` complex table (``RotaryEmbedding2D``), or
            None without RoPE.
        blocks (Sequence[nn.Module]): Blocks with ``window_size`` and
            ``forward_packed(x (N, C), PackedContext) -> (N, C)``.
    """

    patch_size: int
    embed_dims: int
    window_size: int
    out_indices: Tuple[int, ...]
    with_cp: bool
    training: bool
    num_prefix_tokens: int
    patch_embed: PatchEmbed
    pos_embed: Optional[Tensor]
    rope: Optional[nn.Module]
    blocks: Sequence[nn.Module]

    def check_input_size(self, height: int, width: int) -> Tuple[int, int]:
        """Base grid (H / p, W / p) of an input; ValueError naming the fix
        when the backbone refuses it."""

    def nominal_grid(self, grid: Tuple[int, int]) -> Tuple[int, int]:
        """The grid positions are defined on for an input of ``grid``
        cells (global RoPE is evaluated on it)."""

    def position_map(self, grid: Tuple[int, int]) -> Tensor:
        """(1, C, rows, cols) absolute positions at the base grid; not
        called when ``pos_embed`` is None."""

    def prefix_tokens(self, batch: int) -> Optional[Tensor]:
        """(B, P, C) prefix tokens, their positions included; None when
        ``num_prefix_tokens`` is 0."""

    def notify_tokens(self, tokens: Tensor, baseline_tokens: Tensor,
                      **kwargs) -> None:
        """Called once per forward with the (B,) int64 token counts and
        base-grid cells per image (prefix tokens counted in neither); in
        static mode with a pack size that may cap, also ``capped=`` a 0-dim
        bool tensor; see :class:`~mmapt.models.backbones.TokenObservable`."""


def missing_host_members(backbone: object) -> List[str]:
    """The :class:`APTHost` members ``backbone`` lacks (empty for a host)."""
    members = list(APTHost.__annotations__) + [
        name for name, value in vars(APTHost).items()
        if callable(value) and not name.startswith('_')
    ]
    return [name for name in members if not hasattr(backbone, name)]
