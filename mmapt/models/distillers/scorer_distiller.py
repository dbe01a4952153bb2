"""ScorerDistiller: train the ``learned`` patch scorer (labels optional).

What the scorer should predict is what merging a patch does to the
backbone's output features. The frozen APT backbone (the plain model's
weights; APT layers as loaded, zero-initialised for a plain checkpoint)
gives that directly, per batch and without labels:

1. the plain forward: every token a base patch (exactly the plain model);
2. for every patch size ``s`` above the base, the forwards with patches of
   size ``s`` merged: a checkerboard of them and then the other half
   (default), or every region at once (``merge_pattern='all'``);
3. per base cell, the squared distance between the two output features,
   divided by the image's mean squared feature norm (averaged over the
   backbone's ``out_indices``); averaged over each patch of size ``s`` and
   square-rooted: the relative RMS feature drift of merging that patch,
   ``target_s`` of shape (B, H / s, W / s), the quantity
   ``tools/analysis/calibrate_thresholds.py --max-drift`` reports per image.

The scorer network (:class:`~mmapt.tokenizer.scorer_net.ScorerNet`) sees
only the gray image and regresses ``log(target_s + eps)`` per patch (mean
squared error over all patches and sizes). The targets are constants of the
frozen backbone, so the gradient flows through the scorer alone: no
differentiable patch selection is needed, and the trained scorer's
``exp(output)`` is in drift units, comparable across patch sizes (budget
mode compares them) and thresholdable (``thresholds=(0.2, 0.2, 0.2)`` merges
where the predicted drift is under 20%).

The one approximation: in step 2 other patches merge too (the diagonal
neighbours in a checkerboard, all of them with ``'all'``), so a patch's
target also holds the effect of its merged context through attention.
Real layouts merge other patches; the ranking of patches, which is what
thresholds and budgets use, is what the scorer has to get right.

``merge_pattern='budget'`` measures the targets at budget mode's operating
point instead (:mod:`~mmapt.models.distillers.budget_targets`): on the
layouts that budget mode makes from the scorer's own current scores at each
of ``budget_keep``, only for the patches it merged last or split last, so
the scorer learns where the marginal merges of those budgets hurt.

No labels are read by default: any image folder / dataset works (the toy
config uses the training images of the toy detection set; evaluation uses
its val images).

The optional task term (``task_weight > 0``, for datasets with labels)
weights each base cell's squared drift by ``1 + task_weight * m`` before the
patch average, ``m`` in [0, 1] being how much the cell matters to the task
(:mod:`~mmapt.models.distillers.task_maps`: object coverage or object
borders for detection, a class-boundary indicator for segmentation). A
patch on an object or a class boundary then gets up to
``sqrt(1 + task_weight)`` times its drift, so the scorer learns to keep
fine patches where the task needs them; background patches keep their
label-free target.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModel
from torch import Tensor

from mmapt.choices import check_choice
from mmapt.registry import MODELS
from mmapt.tokenizer import PatchLayout, build_layout, images_to_gray
from mmapt.tokenizer.scorer_net import ScorerNet
from ..apt import is_apt_backbone
from .budget_targets import budget_frontier_targets, checkerboard, pooled_drift
from .losses import masked_mse, pairwise_rank_loss
from .task_maps import TASK_MAPS, task_cells


def merged_layout(backbone,
                  images: Tensor,
                  scale: int,
                  parity: Optional[int] = None) -> PatchLayout:
    """Patches of one scale over the images, base cells elsewhere.

    Args:
        scale (int): The scale merged (0: the plain model's grid).
        parity (int, optional): None: every patch of the scale merges.
            0 or 1: only the patches whose (row + col) % 2 is ``parity``
            (a checkerboard): each merged patch keeps its four neighbours
            at base resolution.
    """
    tokenizer = backbone.tokenizer
    grid = tokenizer.grid_size(*images.shape[-2:])
    batch, device = images.shape[0], images.device
    rows, cols = grid[0] >> scale, grid[1] >> scale
    merged = torch.ones(rows, cols, dtype=torch.bool, device=device)
    if scale and parity is not None:
        merged = checkerboard(rows, cols, parity, device)
    masks = []
    for i in range(tokenizer.num_scales):
        if i == scale:
            mask = merged
        elif i == 0:  # base cells wherever no patch of ``scale`` merged
            mask = ~merged.repeat_interleave(1 << scale, 0).repeat_interleave(
                1 << scale, 1)
        else:
            mask = torch.zeros(
                grid[0] >> i, grid[1] >> i, dtype=torch.bool, device=device)
        masks.append(mask.expand(batch, -1, -1))
    return build_layout(masks, grid, tokenizer.window_size,
                        tokenizer.num_prefix_tokens)


def forward_layout(backbone, images: Tensor,
                   layout: PatchLayout) -> List[Tensor]:
    """The APT backbone's dense output maps for a given layout."""
    tokens = backbone.embed(images, layout)
    outs = backbone.apt.forward_blocks(tokens, backbone.packed_context(layout))
    return list(layout.unpack_all(outs))


def cell_drift(plain: Sequence[Tensor], merged: Sequence[Tensor]) -> Tensor:
    """(B, h, w) squared feature distance per base cell over the image's
    mean squared feature norm, averaged over the output maps."""
    total = 0
    for p, m in zip(plain, merged):
        p, m = p.float(), m.float()
        energy = p.square().sum(1).mean(dim=(1, 2), keepdim=True)
        total = total + (m - p).square().sum(1) / energy.clamp(min=1e-12)
    return total / len(plain)


@torch.no_grad()
def drift_sums(backbone, images: Tensor) -> Tuple[Tensor, Tensor]:
    """(B,) ``|F_apt - F|^2`` and ``|F|^2`` over all output maps of each
    image: the APT backbone's own layout (its scorer, thresholds or budget)
    against the plain layout, same weights. Sums over several crops of an
    image (slide windows) give the image's drift."""
    plain = forward_layout(backbone, images,
                           merged_layout(backbone, images, 0))
    apt = backbone(images)
    num = sum((a.float() - p.float()).square().sum(dim=(1, 2, 3))
              for a, p in zip(apt, plain))
    den = sum(p.float().square().sum(dim=(1, 2, 3)) for p in plain)
    return num, den


def image_drift(backbone, images: Tensor) -> Tensor:
    """(B,) relative feature drift ``|F_apt - F| / |F|`` of each image (see
    :func:`drift_sums`; the measure of
    ``tools/analysis/calibrate_thresholds.py --max-drift``)."""
    num, den = drift_sums(backbone, images)
    return (num / den.clamp(min=1e-12)).sqrt()


@MODELS.register_module()
class ScorerDistiller(BaseModel):
    """A frozen APT backbone teaching a :class:`ScorerNet` its feature drift.

    Train with ``tools/train.py`` on any images (no labels read); the
    checkpoint's ``scorer.*`` tensors are what
    ``scorer=dict(type='learned', checkpoint=...)`` loads.

    Args:
        backbone (dict): An APT backbone config (``APTEVA02``, ``APTViT``)
            with the trained model's weights, e.g. ``init_cfg=dict(type=
            'Pretrained', checkpoint=..., prefix='backbone.')``. Frozen;
            its thresholds / scorer are not used.
        scorer (dict, optional): :class:`ScorerNet` arguments other than the
            patch sizes (taken from the backbone), e.g. ``channels``.
        merge_pattern (str): Which patches of a size merge in one target
            forward: ``'checkerboard'`` (default; two forwards per size,
            each merged patch among base-resolution neighbours),
            ``'all'`` (one forward, everything merged: the patch's drift
            includes its merged context's) or ``'budget'`` (three forwards
            per keep ratio of ``budget_keep``: the budget layouts of the
            scorer's own scores; only the patches budget mode merged or
            split last get a target, their drift in that layout).
        budget_keep (Sequence[float]): The keep ratios of
            ``merge_pattern='budget'`` (the operating points the scorer is
            used at; the loss averages them). Defaults to (0.5, 0.7).
        rank_weight (float): Weight of a pairwise ranking loss within each
            image and patch size (:func:`~mmapt.models.distillers.losses.
            pairwise_rank_loss`: the patch with more target drift should
            score higher) added to the squared error of the log drift. 0
            (default): the squared error alone.
        correction_weight (float): Shrinkage towards the contrast prior:
            ``correction_weight`` times the mean squared correction of the
            network's heads (``ScorerNet(prior='contrast')``: the part of the
            log drift not given by ``a_s * log(1 + contrast) + b_s``) added
            to the loss, so the scorer moves away from contrast only where
            that lowers the squared error by more than it costs. 0
            (default): none. Needs a prior.
        eps (float): Added to the drift before the log, so patches that
            do not move the features (padding, flat areas) do not dominate
            the loss. Defaults to 0.01.
        task_weight (float): The task term's weight (module docstring):
            0 (default) is label-free; above 0 the training pipeline must
            load labels (``LoadAnnotations``), and each cell's squared drift
            is multiplied by ``1 + task_weight * m``.
        task_map (str, optional): Which map ``m`` the task term uses
            (:mod:`~mmapt.models.distillers.task_maps`): ``'coverage'``
            (objects' area; detection only) or ``'borders'`` (objects'
            borders for detection, class boundaries for segmentation).
            None (default): coverage for detection, class boundaries for
            segmentation.
        data_preprocessor (dict, optional): The detector's / segmentor's
            data preprocessor (normalisation and padding must match the
            backbone's ``mean`` / ``std`` and the largest patch).
        init_cfg (dict, optional): mmengine initialisation.
    """

    def __init__(self,
                 backbone: dict,
                 scorer: Optional[dict] = None,
                 merge_pattern: str = 'checkerboard',
                 budget_keep: Sequence[float] = (0.5, 0.7),
                 rank_weight: float = 0.,
                 correction_weight: float = 0.,
                 eps: float = 0.01,
                 task_weight: float = 0.,
                 task_map: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not is_apt_backbone(backbone.get('type', '')):
            raise ValueError(
                f'ScorerDistiller needs an APT backbone (APTEVA02, APTViT, '
                f'...) to merge patches; got type={backbone.get("type")!r}')
        check_choice('merge_pattern', merge_pattern,
                     ('checkerboard', 'all', 'budget'))
        budget_keep = tuple(float(k) for k in budget_keep)
        if not budget_keep or not all(0 < k < 1 for k in budget_keep):
            raise ValueError(
                f'budget_keep must be keep ratios in (0, 1) (the budget '
                f'mode operating points to train at, e.g. (0.5, 0.7)), got '
                f'{budget_keep!r}')
        check_choice('task_map', task_map, (None, ) + TASK_MAPS)
        if not rank_weight >= 0:
            raise ValueError(f'rank_weight must be >= 0 (0: no ranking '
                             f'loss), got {rank_weight!r}')
        if not correction_weight >= 0:
            raise ValueError(f'correction_weight must be >= 0 (0: no '
                             f'shrinkage), got {correction_weight!r}')
        if not eps > 0:
            raise ValueError(f'eps must be > 0, got {eps!r}')
        if not task_weight >= 0:
            raise ValueError(f'task_weight must be >= 0 (0: label-free), '
                             f'got {task_weight!r}')
        self.backbone = MODELS.build(backbone)
        self.backbone.requires_grad_(False)
        sizes = self.backbone.tokenizer.patch_sizes
        if len(sizes) < 2:
            raise ValueError('the backbone has one patch size: nothing to '
                             'merge, nothing to score (give it thresholds)')
        self.scorer = ScorerNet(
            sizes[1:], cell_size=sizes[0], **(scorer or {}))
        if correction_weight and not self.scorer.prior:
            raise ValueError(
                'correction_weight shrinks the correction of the contrast '
                'prior, but the scorer has prior=None: remove '
                'scorer.prior=None or set correction_weight=0.')
        self.merge_pattern = merge_pattern
        self.budget_keep = budget_keep
        self.rank_weight = float(rank_weight)
        self.correction_weight = float(correction_weight)
        self.eps = float(eps)
        self.task_weight = float(task_weight)
        self.task_map_kind = task_map

    def train(self, mode: bool = True) -> 'ScorerDistiller':
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout / drop path
        return self

    def task_map(self, images: Tensor,
                 data_samples: Optional[list]) -> Optional[Tensor]:
        """(B, H / cell, W / cell) task map of the batch's labels, or None
        when the task term is off (``task_weight == 0``)."""
        if not self.task_weight:
            return None
        return task_cells(data_samples, tuple(images.shape[-2:]),
                          self.backbone.tokenizer.patch_sizes[0],
                          images.device, self.task_map_kind)

    @torch.no_grad()
    def drift_targets(self,
                      images: Tensor,
                      task: Optional[Tensor] = None) -> List[Tensor]:
        """One (B, H / s, W / s) relative-drift map per patch size ``s``
        above the base (see the module docstring); ``task``, a
        (B, H / cell, W / cell) map of :meth:`task_map`, weights the cells'
        squared drift by ``1 + task_weight * task``."""
        if self.merge_pattern == 'budget':
            raise ValueError(
                'merge_pattern=\'budget\' targets depend on the scorer\'s '
                'scores: use budget_targets(images, task)')
        backbone = self.backbone
        layout_drift = self._layout_drift(images, task)
        targets = []
        for scale in range(1, backbone.tokenizer.num_scales):
            parities = (None, ) if self.merge_pattern == 'all' else (0, 1)
            target = 0
            for parity in parities:
                drift = pooled_drift(
                    layout_drift(
                        merged_layout(backbone, images, scale, parity)), scale)
                if parity is None:
                    target = drift
                else:  # this pass's merged patches only
                    target = target + drift * checkerboard(
                        *drift.shape[-2:], parity, drift.device)
            targets.append(target)
        return targets

    @torch.no_grad()
    def budget_targets(
        self,
        images: Tensor,
        task: Optional[Tensor] = None,
        scores: Optional[Sequence[Tensor]] = None
    ) -> List[Tuple[List[Tensor], List[Tensor]]]:
        """``merge_pattern='budget'``: per keep ratio of ``budget_keep``,
        one (B, H / s, W / s) drift map per patch size and the bool maps of
        the patches that have a target (:func:`budget_frontier_targets`);
        ``scores``: the scorer's maps that make the layouts (default: its
        current prediction); ``task`` as for :meth:`drift_targets`."""
        layout_drift = self._layout_drift(images, task)  # checks the size
        tokenizer = self.backbone.tokenizer
        grid = tokenizer.grid_size(*images.shape[-2:])
        if scores is None:
            scores = self.predict_log_drift(images)

        def masks_drift(masks: List[Tensor]) -> Tensor:
            return layout_drift(
                build_layout(masks, grid, tokenizer.window_size,
                             tokenizer.num_prefix_tokens))

        return [
            budget_frontier_targets(tokenizer, scores, grid, keep, masks_drift)
            for keep in self.budget_keep
        ]

    def _layout_drift(
            self, images: Tensor,
            task: Optional[Tensor]) -> Callable[[PatchLayout], Tensor]:
        """Checks the input, runs the plain layout once, and returns: layout
        -> (B, H / cell, W / cell) squared relative drift of its forward per
        base cell, weighted by ``1 + task_weight * task`` when ``task`` is
        given."""
        backbone = self.backbone
        backbone.apt.check_input_size(*images.shape[-2:])
        plain = forward_layout(backbone, images,
                               merged_layout(backbone, images, 0))

        def drift_of(layout: PatchLayout) -> Tensor:
            drift = cell_drift(plain, forward_layout(backbone, images, layout))
            if task is not None:
                drift = drift * (1 + self.task_weight * task)
            return drift

        return drift_of

    def gray(self, images: Tensor) -> Tensor:
        """Normalised images -> the gray levels the scorer reads."""
        tokenizer = self.backbone.tokenizer
        return images_to_gray(images, tokenizer.mean, tokenizer.std)

    def predict_log_drift(self, images: Tensor) -> List[Tensor]:
        """The scorer's log-drift maps of normalised images."""
        return self.scorer(self.gray(images))

    def loss(self,
             images: Tensor,
             data_samples: Optional[list] = None) -> Dict[str, Tensor]:
        """Mean squared error of the predicted log drift, over all patches
        of all sizes (each size weighted equally), plus ``rank_weight``
        times the ranking loss and ``correction_weight`` times the mean
        squared correction; ``data_samples`` carry
        the labels of the task term (unused when ``task_weight == 0``)."""
        task = self.task_map(images, data_samples)
        preds, corrections = self.scorer.maps_and_corrections(
            self.gray(images))
        if self.merge_pattern == 'budget':
            runs = self.budget_targets(images, task, preds)
        else:
            runs = [(self.drift_targets(images, task), [None] * len(preds))]
        losses = []
        for targets, has_target in runs:
            for pred, target, has in zip(preds, targets, has_target):
                log_target = (target + self.eps).log()
                loss = masked_mse(pred, log_target, has)
                if self.rank_weight:
                    loss = loss + self.rank_weight * pairwise_rank_loss(
                        pred, log_target, has)
                losses.append(loss)
        out = dict(loss=sum(losses) / len(losses))
        if self.correction_weight:  # averaged over sizes, as the error
            shrink = sum(c.square().mean()
                         for c in corrections) / len(corrections)
            out['loss'] = out['loss'] + self.correction_weight * shrink
            out['correction'] = shrink.detach()
        targets, has_target = runs[0]
        for size, target, has in zip(self.scorer.patch_sizes, targets,
                                     has_target):
            if has is None:
                has = torch.ones_like(target, dtype=torch.bool)
            # Mean over the patches with a target (0 when none has one).
            out[f'drift_{size}'] = (target * has).sum().detach() / \
                has.sum().clamp(min=1)
        return out

    def forward(
            self,
            inputs: Tensor,
            data_samples: Optional[list] = None,
            mode: str = 'tensor'
    ) -> Union[Dict[str, Tensor], List[Tensor], Tuple]:
        """``mode='loss'``: the loss dict; ``'tensor'``: the predicted
        log-drift maps; ``'predict'``: (predicted, target) drift maps (with
        ``merge_pattern='budget'``: the first keep ratio's targets, 0 where
        a patch has none)."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'tensor':
            return self.predict_log_drift(inputs)
        if mode == 'predict':
            log_preds = self.predict_log_drift(inputs)
            task = self.task_map(inputs, data_samples)
            if self.merge_pattern == 'budget':
                targets = self.budget_targets(inputs, task, log_preds)[0][0]
            else:
                targets = self.drift_targets(inputs, task)
            return [p.exp() for p in log_preds], targets
        raise ValueError(f'mode must be \'loss\', \'tensor\' or '
                         f'\'predict\', got {mode!r}')
