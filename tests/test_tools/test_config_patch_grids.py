"""Every APT config's patch grid as the demo and browse_dataset draw it: the
tokenizer has the config's thresholds, patch sizes, bins and statistics, and
on a picture that is flat on the left and noise on the right the layout the
drawer gets keeps the largest patches in the flat part and only base
patches in the noise (a regression once drew a plain 16-px grid for APT
configs)."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from test_tokenizer_tools import load_tool

from mmapt.apis.views import normalise
from mmapt.models.apt import is_apt_backbone_cfg
from mmapt.visualization import patch_grid
from mmapt.visualization.patch_grid import tokenizer_from_config

APT_CONFIGS = sorted({
    osp.relpath(path, osp.join(ROOT, 'configs'))
    for pattern in ('configs/**/apt_*.py', 'configs/toy/*apt*.py')
    for path in glob.glob(osp.join(ROOT, pattern), recursive=True)
})


def _cfg(name: str) -> Config:
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def test_every_apt_config_is_found():
    # Detection and segmentation, full-size and toy, EVA-02 and DINOv2.
    assert {
        'apt_vitdet_coco.py', 'apt_upernet_ade20k.py', 'toy/toy_apt_det.py',
        'toy/toy_apt_importance_det.py', 'toy/toy_apt_dinov2_seg.py'
    } <= set(APT_CONFIGS)
    assert len(APT_CONFIGS) >= 17


@pytest.mark.parametrize('name', APT_CONFIGS)
def test_drawn_tokenizer_has_the_config_settings(name):
    cfg = _cfg(name)
    backbone = cfg.model.backbone
    assert is_apt_backbone_cfg(cfg)
    tokenizer = tokenizer_from_config(cfg)
    assert tokenizer.thresholds == tuple(map(float, backbone.thresholds))
    assert tokenizer.patch_sizes == tuple(backbone.patch_sizes)
    assert tokenizer.entropy_bins == backbone.get('entropy_bins', 512)
    assert tokenizer.mean == tuple(cfg.model.data_preprocessor.mean)
    assert tokenizer.std == tuple(cfg.model.data_preprocessor.std)
    assert tokenizer.keep_ratio == backbone.get('keep_ratio')
    # browse_dataset --thresholds: the override, at its own scales.
    override = tokenizer_from_config(cfg, (1e9, ))
    assert override.thresholds == (1e9, )
    assert override.patch_sizes == tuple(backbone.patch_sizes[:2])
    assert override.mean == tokenizer.mean


def flat_and_noise(tokenizer, busy_cols: int):
    """A normalised (1, 3, 2L, 4L) picture (L: the largest patch), flat gray
    but for noise in its rightmost ``busy_cols`` columns, and its (1, 2L, 4L)
    importance map (zero: the base score as it is)."""
    side = tokenizer.largest_patch
    image = np.full((2 * side, 4 * side, 3), 120, np.uint8)
    rng = np.random.default_rng(0)
    image[:, -busy_cols:] = rng.integers(0, 256, (2 * side, busy_cols, 3))
    inputs = normalise([image], tokenizer.mean, tokenizer.std)
    return inputs, torch.zeros(1, 2 * side, 4 * side)


def check_flat_and_busy(tokenizer, layout, busy_cols: int) -> None:
    """Patch sizes (px) of the layout left and right of the noise edge."""
    p = tokenizer.patch_size
    left = (layout.col + layout.side) * p <= 4 * tokenizer.largest_patch - \
        busy_cols
    sizes = layout.side * p
    flat, busy = sizes[left].tolist(), sizes[~left].tolist()
    assert set(busy) == {p}, f'noise must keep base patches, got {set(busy)}'
    if tokenizer.budget_mode:
        # The budget left after the noise splits flat patches too (ties),
        # but not all of them.
        assert max(flat) > p and len(flat) < int((layout.side[left]**2).sum())
    else:  # thresholds: flat merges all the way
        assert set(flat) == {tokenizer.largest_patch}
    # Every cell of the picture is covered once.
    assert int((layout.side**2).sum()) == \
        layout.grid_size[0] * layout.grid_size[1]


def busy_width(tokenizer) -> int:
    # Half the picture; in budget mode a quarter: a keep ratio of 0.5
    # cannot keep every base patch of half the picture.
    return tokenizer.largest_patch * (1 if tokenizer.budget_mode else 2)


def learned_scorer_config(name: str) -> bool:
    scorer = _cfg(name).model.backbone.get('scorer')
    return isinstance(scorer, dict) and scorer.get('type') == 'learned'


# A learned scorer's layout depends on its trained weights: those configs
# are tested by test_drawn_learned_scorer_is_the_model_scorer.
HAND_MADE_SCORER_CONFIGS = [
    name for name in APT_CONFIGS if not learned_scorer_config(name)
]


def test_learned_scorer_configs_are_found():
    assert 'apt_vitdet_coco_learned.py' in APT_CONFIGS
    assert 'apt_vitdet_coco_learned.py' not in HAND_MADE_SCORER_CONFIGS


@pytest.mark.parametrize('name', HAND_MADE_SCORER_CONFIGS)
def test_drawn_layout_merges_flat_and_keeps_noise(name, monkeypatch):
    """Through the calls demo/image_demo.py makes: tokenizer_from_config,
    then draw_patch_grid (with the importance map the demo passes)."""
    cfg = _cfg(name)
    tokenizer = tokenizer_from_config(cfg)
    assert tokenizer.largest_patch == cfg.model.backbone.patch_sizes[-1]
    busy = busy_width(tokenizer)
    inputs, importance = flat_and_noise(tokenizer, busy)
    uses_maps = tokenizer.scorer.name == 'importance'
    _, caption, layout = patch_grid.draw_patch_grid(
        inputs, tokenizer, importance=importance if uses_maps else None)
    check_flat_and_busy(tokenizer, layout, busy)
    assert f'{tokenizer.largest_patch}px:' in caption


def test_drawn_learned_scorer_is_the_model_scorer():
    """A learned-scorer config: from the config alone the drawing stops with
    the no-weights error; with the built backbone (as the demo passes it,
    after its checkpoint loaded) the drawn tokenizer scores with that
    backbone's network and draws the layout the backbone's own tokenizer
    makes."""
    from mmapt.registry import MODELS
    cfg = _cfg('apt_vitdet_coco_learned.py')
    inputs, _ = flat_and_noise(tokenizer_from_config(cfg), 128)
    with pytest.raises(ValueError, match='no trained weights'):
        patch_grid.draw_patch_grid(inputs, tokenizer_from_config(cfg))
    backbone_cfg = dict(cfg.model.backbone, init_cfg=None)
    backbone_cfg['arch'] = dict(embed_dims=32, num_layers=2, num_heads=1)
    backbone_cfg.update(global_attn_indexes=(1, ), out_indices=(1, ))
    torch.manual_seed(0)
    backbone = MODELS.build(backbone_cfg)
    network = backbone.apt_scorer
    # What a checkpoint load does: the network's weights arrive through the
    # backbone's state dict.
    state = {k: torch.randn_like(v) for k, v in network.state_dict().items()}
    backbone.load_state_dict({
        f'apt_scorer.{k}': v
        for k, v in state.items()
    },
                             strict=False)
    tokenizer = tokenizer_from_config(cfg, backbone=backbone)
    assert tokenizer.scorer.network is network
    _, _, layout = patch_grid.draw_patch_grid(inputs, tokenizer)
    own = backbone.apt.tokenizer(inputs)
    assert torch.equal(layout.side, own.side)
    assert torch.equal(layout.row, own.row)


def _run_demo_capturing_the_grid(demo, config: str, photo, out):
    drawn = {}
    draw = demo.draw_patch_grid

    def spy(inputs, tokenizer, *args, **kwargs):
        picture, caption, layout = draw(inputs, tokenizer, *args, **kwargs)
        drawn.update(inputs=inputs, tokenizer=tokenizer, layout=layout)
        return picture, caption, layout

    demo.draw_patch_grid = spy
    demo.main([str(photo), config, '--device', 'cpu', '--out-file', str(out)])
    return drawn


@pytest.mark.parametrize('name', ['toy/toy_apt_det.py', 'toy/toy_apt_seg.py'])
def test_demo_draws_the_config_layout(name, tmp_path):
    """The demo itself (random weights): the grid it draws comes from a
    tokenizer with the config's settings, and on a flat / noise photo its
    layout has the largest patches on the flat side, base ones in the
    noise."""
    cfg = _cfg(name)
    side = cfg.model.backbone.patch_sizes[-1]
    photo = tmp_path / 'photo.png'
    image = np.full((2 * side, 4 * side, 3), 120, np.uint8)
    image[:, 2 * side:] = np.random.default_rng(0).integers(
        0, 256, (2 * side, 2 * side, 3))
    from PIL import Image
    Image.fromarray(image).save(photo)
    demo = load_tool('demo/image_demo.py')
    drawn = _run_demo_capturing_the_grid(demo, osp.join(ROOT, 'configs', name),
                                         photo, tmp_path / 'out.png')
    tokenizer = drawn['tokenizer']
    assert tokenizer.thresholds == tuple(
        map(float, cfg.model.backbone.thresholds))
    assert tokenizer.patch_sizes == tuple(cfg.model.backbone.patch_sizes)
    layout, inputs = drawn['layout'], drawn['inputs']
    # The pipeline resizes the photo onto the canvas: its noise starts at
    # the middle of the photo's width as drawn.
    p = tokenizer.patch_size
    photo_width = inputs.shape[-1]
    content = inputs[0].abs().sum(0) > 0  # padding is the mean colour (0)
    photo_width = int(content.any(0).nonzero().max()) + 1
    rows = int(content.any(1).nonzero().max()) + 1
    edge = photo_width // 2
    inside = ((layout.row + layout.side) * p <= rows) & (
        (layout.col + layout.side) * p <= photo_width)
    right = inside & (layout.col * p >= edge)
    left = inside & ((layout.col + layout.side) * p <= edge)
    assert right.any() and left.any()
    assert set((layout.side[right] * p).tolist()) == {p}
    assert (layout.side[left] > 1).all()


@pytest.mark.parametrize('thresholds', [None, ['1e9']])
def test_browse_dataset_draws_the_config_layout(thresholds, tmp_path,
                                                monkeypatch, capsys):
    """browse_dataset itself on the APT toy detector, its data set replaced
    by one flat / noise picture (the real data preprocessor and visualizer):
    the layout it draws keeps the largest patches where the picture is flat
    and base ones in the noise; ``--thresholds 1e9`` draws two scales that
    merge everywhere."""
    from mmdet.structures import DetDataSample
    browse = load_tool('tools/analysis/browse_dataset.py')
    config = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
    backbone = _cfg('toy/toy_apt_det.py').model.backbone
    side = backbone.patch_sizes[-1]
    image = np.full((2 * side, 4 * side, 3), 120, np.uint8)
    image[:, 2 * side:] = np.random.default_rng(0).integers(
        0, 256, (2 * side, 2 * side, 3))
    sample = DetDataSample(metainfo=dict(img_path='flat_noise.png'))
    item = dict(
        inputs=torch.from_numpy(image).permute(2, 0, 1).contiguous(),
        data_samples=sample)

    def one_picture(cfg, split):
        # build_parts without the data set: mmdet's own parts.
        from mmdet.registry import MODELS, VISUALIZERS
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=True)
        visualizer = VISUALIZERS.build(
            dict(cfg.visualizer, name=f'browse_{tmp_path.name}'))
        visualizer.dataset_meta = dict(classes=('thing', ))
        return [item], MODELS.build(cfg.model.data_preprocessor), visualizer

    drawn = {}
    draw = browse.draw_patch_grid

    def spy(inputs, tokenizer, *args, **kwargs):
        out = draw(inputs, tokenizer, *args, **kwargs)
        drawn.update(tokenizer=tokenizer, layout=out[2])
        return out

    monkeypatch.setattr(browse, 'check_data', lambda *args: None)
    monkeypatch.setattr(browse, 'build_parts', one_picture)
    monkeypatch.setattr(browse, 'draw_patch_grid', spy)
    argv = [
        'browse_dataset.py', config, '--split', 'val', '--output-dir',
        str(tmp_path)
    ] + (['--thresholds'] + thresholds if thresholds else [])
    monkeypatch.setattr('sys.argv', argv)
    browse.main()
    assert len(glob.glob(str(tmp_path / '*.png'))) == 1
    tokenizer, layout = drawn['tokenizer'], drawn['layout']
    if thresholds:
        assert tokenizer.thresholds == (1e9, )
        assert set((layout.side * tokenizer.patch_size).tolist()) == {32}
        return
    assert tokenizer.thresholds == tuple(backbone.thresholds)
    assert tokenizer.patch_sizes == tuple(backbone.patch_sizes)
    check_flat_and_busy(tokenizer, layout, 2 * side)
    assert 'tokens /' in capsys.readouterr().out
