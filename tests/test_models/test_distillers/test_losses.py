"""The scorer distiller's losses: the masked squared error and the
pairwise ranking loss, alone and in a training step."""
import pytest
import torch
from conftest import flat_and_noise_images
from test_scorer_distiller import BACKBONE, train_steps

from mmapt.models.distillers import ScorerDistiller
from mmapt.models.distillers.losses import masked_mse, pairwise_rank_loss


def test_masked_mse_only_counts_the_patches_with_a_target():
    pred = torch.tensor([[1., 2.], [3., 4.]])
    target = torch.zeros(2, 2)
    has = torch.tensor([[True, False], [False, True]])
    assert float(masked_mse(pred, target, has)) == pytest.approx(8.5)
    assert float(masked_mse(pred, target, None)) == pytest.approx(7.5)
    assert float(masked_mse(pred, target, torch.zeros_like(has))) == 0


def test_rank_loss_rewards_the_order_not_the_scale():
    target = torch.tensor([[[0., 1.], [2., 3.]]])
    right = pairwise_rank_loss(10 * target - 50, target, None)
    wrong = pairwise_rank_loss(-10 * target, target, None)
    assert float(right) < 1e-3 < 5 < float(wrong)
    # Pairs with equal targets, and patches without a target, do not count.
    assert float(pairwise_rank_loss(target, torch.zeros_like(target),
                                    None)) == 0
    has = torch.tensor([[[True, True], [False, False]]])
    swapped = torch.tensor([[[1., 0.], [-9., 9.]]])
    want = float(torch.nn.functional.softplus(torch.tensor(1.)))
    assert float(pairwise_rank_loss(swapped, target,
                                    has)) == pytest.approx(want)
    # Images do not pair with each other.
    two = torch.stack([target[0], target[0] + 10])
    assert float(pairwise_rank_loss(10 * two, two, None)) < 1e-3


def test_rank_weight_trains_and_is_checked():
    torch.manual_seed(0)
    model = ScorerDistiller(
        BACKBONE, scorer=dict(channels=8), rank_weight=10.).train()
    x = flat_and_noise_images(2, 128, 128, (64, 64), seed=0)

    def rank_term():
        with torch.no_grad():
            targets = model.drift_targets(x)
            preds = model.predict_log_drift(x)
        return sum(
            float(pairwise_rank_loss(p, (t + model.eps).log(), None))
            for p, t in zip(preds, targets))

    before = rank_term()
    losses, _ = train_steps(model, x)
    assert losses[-1] < 0.95 * losses[0], losses
    assert rank_term() < 0.95 * before
    # The loss is the squared error plus rank_weight times this term.
    with_rank = float(model(x, mode='loss')['loss'])
    model.rank_weight = 0.
    mse = float(model(x, mode='loss')['loss'])
    # Two sizes: the loss averages them.
    assert with_rank == pytest.approx(mse + 10. * rank_term() / 2, rel=1e-4)
    with pytest.raises(ValueError, match='rank_weight must be >= 0'):
        ScorerDistiller(BACKBONE, rank_weight=-1.)


def test_correction_weight_shrinks_towards_contrast():
    x = flat_and_noise_images(2, 128, 128, (64, 64), seed=0)

    def trained(weight):
        torch.manual_seed(0)
        model = ScorerDistiller(
            BACKBONE, scorer=dict(channels=8),
            correction_weight=weight).train()
        losses, out = train_steps(model, x)
        with torch.no_grad():
            gray = model.gray(x)
            _, corrections = model.scorer.maps_and_corrections(gray)
        return losses, out, sum(float(c.square().mean()) for c in corrections)

    _, plain_out, free = trained(0.)
    losses, out, shrunk = trained(100.)
    assert 'correction' not in plain_out
    assert losses[-1] < losses[0]
    # The same steps move the heads' corrections less under the shrinkage.
    assert 0 < shrunk < 0.5 * free
    assert float(out['correction']) > 0
    with pytest.raises(ValueError, match='correction_weight must be >= 0'):
        ScorerDistiller(BACKBONE, correction_weight=-1.)
    with pytest.raises(ValueError, match='has prior=None'):
        ScorerDistiller(
            BACKBONE, scorer=dict(prior=None), correction_weight=1.)
