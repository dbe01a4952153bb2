"""APT as a composable part of any plain ViT backbone (the one APT seam)."""
from ..layers.context import AttentionGroups, PackedContext
from .adapter import APTAdapter
from .host import APTHost, missing_host_members
from .mixin import APTBackboneMixin

__all__ = [
    'APTAdapter', 'APTBackboneMixin', 'APTHost', 'missing_host_members',
    'AttentionGroups', 'PackedContext'
]
