# Copyright (c) mmapt contributors. All rights reserved.
"""mmdet's Cascade R-CNN head with detectron2's test-time rules.

The released EVA-02 ViTDet detectors were trained and evaluated with
detectron2. Where stock mmdet 3.3.0 computes something else, these
subclasses follow detectron2 (docs/detection.md lists every rule):

* class **probabilities** averaged over the cascade stages (mmdet averages
  logits, then applies softmax);
* **one** mask head, trained on the first stage's samples and run once at
  test (mmdet builds one per stage and averages their sigmoids);
* optional **maskness** rescoring of the mask scores (``mask_scores``, which
  mmdet's ``CocoMetric`` uses for the segm AP only);
* boxes with zero width or height dropped from the final results;
* RoI-to-level mapping with detectron2's formula and epsilon.

This module imports mmdet; ``mmapt.models.roi_heads`` registers builders for
its classes so that ``import mmapt`` does not.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.roi_heads import CascadeRoIHead
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.structures.bbox import bbox2roi
from mmengine.model import ModuleList
from mmengine.structures import InstanceData
from torch import Tensor


def maskness(mask_probs: Tensor, threshold: float = 0.5) -> Tensor:
    """Mean probability of the pixels above ``threshold``, per mask.

    Args:
        mask_probs (Tensor): (N, h, w) sigmoid masks of the predicted class.
        threshold (float): Pixels with a larger probability count.

    Returns:
        Tensor: (N,), 0 for a mask with no pixel above the threshold.
    """
    probs = mask_probs.flatten(1)
    inside = probs > threshold
    total = (probs * inside).sum(1)
    return total / inside.sum(1).clamp(min=1)


class D2CascadeRoIHead(CascadeRoIHead):
    """Cascade R-CNN RoI head that scores and masks like detectron2.

    Args:
        score_average (str): ``'probs'`` averages the per-stage softmax
            probabilities (detectron2, EVA-02); ``'logits'`` keeps mmdet's
            average of logits. Defaults to ``'probs'``.
        shared_mask_head (bool): One mask head for all stages, trained on the
            first stage's samples (loss weight of stage 0) and run once on
            the final boxes, as in detectron2. False builds one per stage
            (mmdet). Defaults to True.
        *args, **kwargs: :class:`mmdet.models.roi_heads.CascadeRoIHead`
            arguments. ``test_cfg.maskness_thr`` (float, optional) turns on
            maskness rescoring of ``mask_scores``.
    """

    def __init__(self,
                 *args,
                 score_average: str = 'probs',
                 shared_mask_head: bool = True,
                 **kwargs) -> None:
        if score_average not in ('probs', 'logits'):
            raise ValueError(f"score_average must be 'probs' (detectron2) "
                             f"or 'logits' (mmdet), got {score_average!r}")
        # Read by init_mask_head, which CascadeRoIHead.__init__ calls.
        self.shared_mask_head = shared_mask_head
        self.score_average = score_average
        self._probs_out = False
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------- building
    def init_mask_head(self, mask_roi_extractor, mask_head) -> None:
        if self.shared_mask_head and isinstance(mask_head, (list, tuple)):
            raise ValueError(
                'shared_mask_head=True builds one mask head: give mask_head '
                'as one dict, or set shared_mask_head=False for a list')
        super().init_mask_head(mask_roi_extractor, mask_head)
        if self.shared_mask_head:
            self.mask_head = ModuleList([self.mask_head[0]])

    def _mask_slot(self, stage: int) -> int:
        return 0 if self.shared_mask_head else stage

    # ------------------------------------------------------------- training
    def _mask_forward(self, stage: int, x: Tuple[Tensor],
                      rois: Tensor) -> dict:
        slot = self._mask_slot(stage)
        extractor = self.mask_roi_extractor[slot]
        feats = extractor(x[:extractor.num_inputs], rois)
        return dict(mask_preds=self.mask_head[slot](feats))

    def mask_loss(self, stage: int, x: Tuple[Tensor], sampling_results,
                  batch_gt_instances) -> dict:
        # detectron2 trains its single mask head once, on the proposals
        # sampled for the first stage.
        if self.shared_mask_head and stage > 0:
            return dict(loss_mask={})
        return super().mask_loss(stage, x, sampling_results,
                                 batch_gt_instances)

    # -------------------------------------------------------------- testing
    def _bbox_forward(self, stage: int, x: Tuple[Tensor],
                      rois: Tensor) -> dict:
        results = super()._bbox_forward(stage, x, rois)
        if self._probs_out:
            results['cls_score'] = F.softmax(results['cls_score'], dim=-1)
        return results

    def _refine_roi(self, x: Tuple[Tensor], rois: Tensor,
                    batch_img_metas: List[dict],
                    num_proposals_per_img: Sequence[int], **kwargs) -> tuple:
        """Stage refinement; with ``'probs'`` the returned ``cls_scores``
        are the logarithms of the stage-averaged probabilities, so that the
        bbox head's softmax gives back exactly that average (it sums to 1).
        The refinement itself is mmdet's (class-agnostic boxes clipped to
        the image, nothing filtered), as in detectron2."""
        if self.score_average == 'logits':
            return super()._refine_roi(x, rois, batch_img_metas,
                                       num_proposals_per_img, **kwargs)
        self._probs_out = True
        try:
            rois, probs, bbox_preds = super()._refine_roi(
                x, rois, batch_img_metas, num_proposals_per_img, **kwargs)
        finally:
            self._probs_out = False
        return rois, [p.log() for p in probs], bbox_preds

    def predict_mask(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     results_list: List[InstanceData],
                     rescale: bool = False) -> List[InstanceData]:
        """Masks of the final boxes, optional maskness ``mask_scores``, and
        detectron2's removal of empty boxes."""
        maskness_thr: Optional[float] = (self.test_cfg
                                         or {}).get('maskness_thr')
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0 or (not self.shared_mask_head
                                       and maskness_thr is None):
            results_list = super().predict_mask(x, batch_img_metas,
                                                results_list, rescale)
        else:
            stages = [0] if self.shared_mask_head else range(self.num_stages)
            probs = torch.stack([
                self._mask_forward(s, x, mask_rois)['mask_preds'].sigmoid()
                for s in stages
            ]).mean(0)
            probs = probs.split([len(res) for res in results_list], 0)
            if maskness_thr is not None:
                for res, prob in zip(results_list, probs):
                    picked = prob[torch.arange(len(res)), res.labels]
                    res.mask_scores = res.scores * maskness(
                        picked, maskness_thr)
            results_list = self.mask_head[-1].predict_by_feat(
                mask_preds=probs,
                results_list=results_list,
                batch_img_metas=batch_img_metas,
                rcnn_test_cfg=self.test_cfg,
                rescale=rescale,
                activate_map=True)
        return [_drop_empty(res) for res in results_list]


def _drop_empty(results: InstanceData) -> InstanceData:
    """detectron2's ``detector_postprocess`` keeps non-empty boxes only."""
    if len(results) == 0:
        return results
    boxes = results.bboxes
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return results if bool(keep.all()) else results[keep]


class D2RoIExtractor(SingleRoIExtractor):
    """Single-level RoI extractor with detectron2's level assignment.

    A box of area ``A`` goes to pyramid level
    ``floor(canonical_level + log2(sqrt(A) / canonical_box_size + 1e-8))``,
    clamped to the levels of ``featmap_strides`` (level ``k`` has stride
    ``2**k``). mmdet's ``finest_scale=56`` rule is the same up to its
    epsilon (1e-6 on ``sqrt(A) / 56``).

    Args:
        canonical_box_size (int): Defaults to 224 (detectron2's default).
        canonical_level (int): Defaults to 4 (stride 16).
        *args, **kwargs: :class:`SingleRoIExtractor` arguments.
    """

    def __init__(self,
                 *args,
                 canonical_box_size: int = 224,
                 canonical_level: int = 4,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level
        strides = list(self.featmap_strides)
        first = int(math.log2(strides[0]))
        if strides != [2**(first + i) for i in range(len(strides))]:
            raise ValueError(
                'D2RoIExtractor needs consecutive power-of-two strides (e.g. '
                f'[4, 8, 16, 32]), got {strides}')
        self.min_level = first

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        sizes = torch.sqrt(
            (rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        levels = torch.floor(self.canonical_level +
                             torch.log2(sizes / self.canonical_box_size +
                                        1e-8))
        levels = levels.clamp(self.min_level, self.min_level + num_levels - 1)
        return (levels - self.min_level).long()
