from .apt_embed import APTEmbed
from .attention import VarlenPlan, build_plans, varlen_attention
from .common import (DenseAttention, DropPath, SelfAttentionBase, attend_dense,
                     window_partition, window_unpartition)
from .context import AttentionGroups, DenseContext, PackedContext
from .embed import (ParamCache, PatchEmbed, pos_embed_map, resize_patch_kernel,
                    resize_pos_embed)
from .eva02_block import EVA02Attention, EVA02Block, SwiGLU
from .rope import (RotaryEmbedding2D, apply_rope, identity_rope,
                   rope_frequencies, rope_table, swap_pairs)
from .vit_block import LayerScale, ViTAttention, ViTBlock, ViTMlp

__all__ = [
    'APTEmbed', 'ParamCache', 'VarlenPlan', 'build_plans', 'varlen_attention',
    'AttentionGroups', 'DenseContext', 'PackedContext', 'DenseAttention',
    'SelfAttentionBase', 'attend_dense', 'PatchEmbed', 'pos_embed_map',
    'resize_patch_kernel', 'resize_pos_embed', 'DropPath', 'EVA02Attention',
    'EVA02Block', 'SwiGLU', 'window_partition', 'window_unpartition',
    'RotaryEmbedding2D', 'apply_rope', 'identity_rope', 'rope_frequencies',
    'rope_table', 'swap_pairs', 'LayerScale', 'ViTAttention', 'ViTBlock',
    'ViTMlp'
]
