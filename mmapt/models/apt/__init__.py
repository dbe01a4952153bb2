"""APT as a composable part of any plain ViT backbone (the one APT seam)."""
from ..layers.context import AttentionGroups, PackedContext
from .adapter import APTAdapter
from .host import APTHost, missing_host_members
from .kind import (apt_tokenizer_args, backbone_cfg_of, backbone_class,
                   init_default, is_apt_backbone, is_apt_backbone_cfg)
from .mixin import APTBackboneMixin

__all__ = [
    'APTAdapter', 'APTBackboneMixin', 'APTHost', 'missing_host_members',
    'AttentionGroups', 'PackedContext', 'apt_tokenizer_args',
    'backbone_cfg_of', 'backbone_class', 'init_default', 'is_apt_backbone',
    'is_apt_backbone_cfg'
]
