"""APT as a composable part of any plain ViT backbone (the one APT seam)."""
from .adapter import APTAdapter
from ..layers.context import AttentionGroups, PackedContext
from .mixin import APTBackboneMixin

__all__ = [
    'APTAdapter', 'APTBackboneMixin', 'AttentionGroups', 'PackedContext'
]
