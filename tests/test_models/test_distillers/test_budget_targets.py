"""ScorerDistiller's ``merge_pattern='budget'``: the frontier of a budget
layout, its targets measured on the layouts budget mode makes, training."""
import pytest
import torch
from conftest import flat_and_noise_images
from test_scorer_distiller import BACKBONE, train_steps

from mmapt.models.distillers import ScorerDistiller
from mmapt.models.distillers.budget_targets import last_splits, unsplit
from mmapt.models.distillers.scorer_distiller import cell_drift
from mmapt.registry import MODELS


def _masks():
    """A 4 x 4 base grid, three scales: the one 64-px patch split into four
    32-px patches, the top-left one split again into base cells (7
    tokens)."""
    keep0 = torch.zeros(1, 4, 4, dtype=torch.bool)
    keep0[0, :2, :2] = True
    keep1 = torch.ones(1, 2, 2, dtype=torch.bool)
    keep1[0, 0, 0] = False
    return [keep0, keep1, torch.zeros(1, 1, 1, dtype=torch.bool)]


def test_last_splits_and_unsplit_give_back_three_tokens():
    masks = _masks()
    frontier = last_splits(masks)
    # Scale 1: the top-left 32-px patch (four base-cell tokens); scale 2:
    # not the 64-px patch, one of its children is split further.
    assert frontier[0].tolist() == [[[True, False], [False, False]]]
    assert frontier[1].tolist() == [[[False]]]
    merged = unsplit(masks, frontier)
    assert sum(int(m.sum()) for m in merged) == \
        sum(int(m.sum()) for m in masks) - 3
    assert merged[1].tolist() == [[[True, True], [True, True]]]
    assert not merged[0].any()
    # Now the 64-px patch is on the frontier: its children are tokens.
    assert last_splits(merged)[1].tolist() == [[[True]]]


def _images():
    return flat_and_noise_images(2, 128, 128, (64, 64), seed=0)


def _budget_distiller(**kwargs) -> ScorerDistiller:
    torch.manual_seed(0)
    return ScorerDistiller(
        BACKBONE, scorer=dict(channels=8), merge_pattern='budget', **kwargs)


def test_budget_targets_are_the_drift_of_budget_modes_own_layout():
    model = _budget_distiller(budget_keep=(0.5, )).eval()
    x = _images()
    [(targets, has_target)] = model.budget_targets(x)
    assert [tuple(t.shape) for t in targets] == [(2, 4, 4), (2, 2, 2)]
    # The same frozen backbone in budget mode with the untrained scorer's
    # ranking (contrast's: the correction starts at zero) makes the layout.
    budget = MODELS.build(dict(BACKBONE, keep_ratio=0.5,
                               scorer='contrast')).eval()
    budget.load_state_dict(model.backbone.state_dict(), strict=False)
    masks, _ = budget.tokenizer.choose_patches(x)
    frontier = last_splits(masks)
    for scale, has in enumerate(has_target, 1):
        assert torch.equal(has, masks[scale] | frontier[scale - 1])
    # Merged-frontier targets: the RMS drift of budget mode's forward.
    model.backbone.tokenizer.thresholds = (-1.0, -1.0)
    with torch.no_grad():
        drift = cell_drift(model.backbone(x), budget(x))
    want = torch.nn.functional.avg_pool2d(drift[:, None], 2)[:, 0].sqrt()
    merged = masks[1]
    assert merged.any()
    torch.testing.assert_close(targets[0][merged], want[merged])
    # Split-frontier targets: positive (merging moves the features) and
    # none where a patch has no target.
    assert bool((targets[0][frontier[0]] > 0).all())
    for target, has in zip(targets, has_target):
        assert not target[~has].any()


def test_budget_training_lowers_the_loss_and_scores_make_the_layouts():
    model = _budget_distiller().train()
    x = _images()
    losses, out = train_steps(model, x)
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(torch.isfinite(v) for v in out.values())
    # Other scores make other layouts, so other patches get targets.
    reverse = [-s for s in model.predict_log_drift(x)]
    ours = model.budget_targets(x)[0][1]
    theirs = model.budget_targets(x, scores=reverse)[0][1]
    assert any(not torch.equal(a, b) for a, b in zip(ours, theirs))
    preds, targets = model(x, mode='predict')
    assert [p.shape for p in preds] == [t.shape for t in targets]


def test_budget_options_checked():
    with pytest.raises(ValueError, match=r'budget_keep must be keep ratios'):
        _budget_distiller(budget_keep=(0.5, 1.5))
    with pytest.raises(ValueError, match=r'budget_keep must be keep ratios'):
        _budget_distiller(budget_keep=())
    with pytest.raises(ValueError, match='use budget_targets'):
        _budget_distiller().drift_targets(_images())


def test_budget_config_is_the_label_free_config_at_the_budgets():
    import os.path as osp

    from conftest import ROOT
    from mmengine.config import Config
    for task in ('coco', 'ade'):
        base = Config.fromfile(
            osp.join(ROOT, 'configs', 'toy', f'toy_learned_scorer_{task}.py'))
        cfg = Config.fromfile(
            osp.join(ROOT, 'configs', 'toy',
                     f'toy_learned_scorer_{task}_budget.py'))
        assert cfg.model.merge_pattern == 'budget'
        assert tuple(cfg.model.budget_keep) == (0.5, 0.7)
        model = dict(cfg.model)
        del model['merge_pattern'], model['budget_keep']
        assert model == base.model
        assert cfg.train_pipeline == base.train_pipeline
