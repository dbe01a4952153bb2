"""The scorer distiller's losses on predicted and target log drift maps."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor


def masked_mse(pred: Tensor, target: Tensor,
               weight: Optional[Tensor]) -> Tensor:
    """Mean squared error over the entries where ``weight`` is True (all
    when None); 0 when none is."""
    if weight is None:
        return F.mse_loss(pred, target)
    weight = weight.to(pred.dtype)
    return (
        (pred - target).square() * weight).sum() / weight.sum().clamp(min=1)


def pairwise_rank_loss(pred: Tensor, target: Tensor,
                       weight: Optional[Tensor]) -> Tensor:
    """RankNet loss within each image: for every pair of patches where
    ``target`` is higher for ``i`` than for ``j``, ``softplus(pred_j -
    pred_i)``, averaged over those pairs (only patches where ``weight`` is
    True, all when None). Budget mode uses only the scores' order, which
    this loss is about; it leaves their scale to the squared error.

    Args:
        pred (Tensor): (B, h, w) predicted log drift.
        target (Tensor): (B, h, w) target log drift.
        weight (Tensor, optional): (B, h, w) bool, the patches with a
            target.
    """
    batch = pred.shape[0]
    pred, target = pred.reshape(batch, -1), target.reshape(batch, -1)
    higher = target[:, :, None] > target[:, None, :]
    if weight is not None:
        has = weight.reshape(batch, -1)
        higher = higher & has[:, :, None] & has[:, None, :]
    pairs = higher.to(pred.dtype)
    loss = F.softplus(pred[:, None, :] - pred[:, :, None])
    return (loss * pairs).sum() / pairs.sum().clamp(min=1)
