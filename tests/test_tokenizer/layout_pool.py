"""Reference pooling of dense maps to a layout's tokens, for tests (the
forward never pools)."""
import torch
import torch.nn.functional as F
from torch import Tensor

from mmapt.tokenizer import PatchLayout


def pool(layout: PatchLayout, dense: Tensor) -> Tensor:
    """Dense map (B or 1, C, Hc, Wc) -> content tokens (N, C): each token
    takes the mean of the cells it covers. A map with batch 1 (e.g. a
    position table) is shared by every image."""
    height, width = layout.grid_size
    if dense.dim() != 4 or tuple(dense.shape[2:]) != (height, width):
        raise ValueError(f'expected a (B, C, {height}, {width}) map, got '
                         f'{tuple(dense.shape)}')
    if dense.shape[0] not in (1, layout.batch_size):
        raise ValueError(f'batch of {dense.shape[0]} maps does not match '
                         f'the layout batch {layout.batch_size}')
    out = dense.new_zeros(layout.num_tokens, dense.shape[1])
    for scale in range(layout.num_scales):
        index = (layout.scale_index == scale).nonzero(as_tuple=True)[0]
        factor = 1 << scale
        pooled = F.avg_pool2d(dense, factor, factor)
        images = layout.image_index[index] if dense.shape[0] > 1 else \
            torch.zeros_like(index)
        value = pooled[images, :, layout.row[index] >> scale,
                       layout.col[index] >> scale]
        out = out.index_copy(0, index, value)
    return out
