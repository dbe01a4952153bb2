"""ScorerDistiller: label-free drift targets, a training step that learns,
its checkpoint loading as the ``learned`` scorer, and the toy config."""
import os.path as osp

import pytest
import torch
from conftest import ROOT, flat_and_noise_images

from mmapt.models.distillers import ScorerDistiller
from mmapt.models.distillers.scorer_distiller import (forward_layout,
                                                      merged_layout)
from mmapt.tokenizer import build_scorer, images_to_gray

BACKBONE = dict(
    type='APTEVA02',
    arch=dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False),
    img_size=128,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1),
    thresholds=(1, 1),
    patch_sizes=(16, 32, 64))


def _distiller(seed=0) -> ScorerDistiller:
    torch.manual_seed(seed)
    return ScorerDistiller(BACKBONE, scorer=dict(channels=8))


def train_steps(model, images, steps=8, lr=1e-2):
    """Adam steps on all the model's parameters (only the scorer's get
    gradients); the losses and the last loss dict."""
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        out = model(images, mode='loss')
        optim.zero_grad()
        out['loss'].backward()
        optim.step()
        losses.append(float(out['loss']))
    return losses, out


def _images():
    # Image 0: flat top-left 64 x 64 corner, noise elsewhere.
    return flat_and_noise_images(2, 128, 128, (64, 64), seed=0)


def test_targets_shapes_and_plain_layout_is_the_plain_model():
    model = _distiller().eval()
    x = _images()
    targets = model.drift_targets(x)
    assert [tuple(t.shape) for t in targets] == [(2, 4, 4), (2, 2, 2)]
    assert all(bool((t >= 0).all()) for t in targets)
    # Merging the flat corner moves the features less than merging noise.
    assert float(targets[0][0, :2, :2].mean()) < float(targets[0][0, 2:,
                                                                  2:].mean())
    # The scale-0 layout is the backbone's own forward with nothing merged.
    backbone = model.backbone
    backbone.tokenizer.thresholds = (-1.0, -1.0)
    with torch.no_grad():
        plain = backbone(x)
        ours = forward_layout(backbone, x, merged_layout(backbone, x, 0))
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b)


def test_training_steps_lower_the_loss_and_only_train_the_scorer():
    model = _distiller().train()
    assert not model.backbone.training
    x = _images()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    losses, _ = train_steps(model, x)
    assert losses[-1] < 0.5 * losses[0], losses
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert all(p.grad is not None for p in model.scorer.parameters())


def test_checkpoint_is_the_learned_scorer(tmp_path):
    model = _distiller().eval()
    path = str(tmp_path / 'iter_1.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    scorer = build_scorer(
        dict(
            type='learned', checkpoint=path, patch_sizes=(32, 64), channels=8))
    x = _images()
    gray = images_to_gray(x, model.backbone.tokenizer.mean,
                          model.backbone.tokenizer.std)
    with torch.no_grad():
        want = [m.exp() for m in model(x, mode='tensor')]
    for a, b in zip(scorer(gray, (32, 64)), want):
        torch.testing.assert_close(a, b)


def test_bad_arguments_named():
    with pytest.raises(ValueError, match='needs an APT backbone'):
        ScorerDistiller(dict(BACKBONE, type='EVA02'))
    with pytest.raises(ValueError, match="mode must be 'loss'"):
        _distiller()(_images(), mode='bogus')


@pytest.mark.parametrize('name, sizes',
                         [('toy_learned_scorer_coco.py', (32, 64, 128)),
                          ('toy_learned_scorer_ade.py', (32, ))])
def test_toy_config_builds(name, sizes):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmapt.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'toy', name))
    init_default_scope(cfg.default_scope)
    assert cfg.val_dataloader is None and cfg.test_dataloader is None
    steps = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert 'LoadAnnotations' not in steps  # label-free
    model = MODELS.build(cfg.model)
    assert isinstance(model, ScorerDistiller)
    assert model.scorer.patch_sizes == sizes
    assert model.backbone.init_cfg['prefix'] == 'backbone.'
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith('scorer.') for n in trainable)
    # The default network (contrast prior) and the larger step of its
    # per-size scale / offset.
    assert model.scorer.prior == 'contrast'
    assert {'scorer.prior_scale', 'scorer.prior_bias'} <= set(trainable)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['scorer.prior_'] == dict(lr_mult=25., decay_mult=0.)
    if 'ade' in name:  # the test-time views: its resize, window-size crops
        assert cfg.train_pipeline[1] == cfg.test_pipeline[1]
        crop = cfg.train_pipeline[2]
        assert crop.type == 'RandomCrop'
        assert tuple(crop.crop_size) == tuple(cfg.crop_size)  # the window
