"""The demo and the tools as a new user meets them: the APT patch grid drawn
for APT configs (not a plain 16-px grid), a folder or an unwritable output
refused before the work, and the demo's prediction drawn at the size it is
saved."""
import os.path as osp
import re
import sys

import numpy as np
import pytest
from conftest import ROOT
from mmengine.config import Config
from PIL import Image
from test_tokenizer_tools import load_tool

from mmapt.engine.preflight import exit_on_input_error
from mmapt.models.apt import is_apt_backbone, is_apt_backbone_cfg
from mmapt.visualization.patch_grid import (draw_patch_grid,
                                            tokenizer_from_config)

TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')

# APT config -> the patch sizes it states.
APT_LAYOUTS = {
    'toy/toy_apt_det.py': (16, 32, 64, 128),
    'apt_vitdet_coco.py': (16, 32, 64, 128),
    'apt_upernet_ade20k.py': (16, 32),
}


def _cfg(name: str) -> Config:
    return Config.fromfile(osp.join(ROOT, 'configs', name))


@pytest.mark.parametrize('name', sorted(APT_LAYOUTS))
def test_tokenizer_from_an_apt_config_has_its_patch_sizes(name):
    cfg = _cfg(name)
    assert tuple(cfg.model.backbone.patch_sizes) == APT_LAYOUTS[name]
    assert is_apt_backbone_cfg(cfg)
    tokenizer = tokenizer_from_config(cfg)
    assert tokenizer.thresholds == tuple(cfg.model.backbone.thresholds)
    assert len(tokenizer.thresholds) == len(APT_LAYOUTS[name]) - 1
    assert tokenizer.patch_sizes == APT_LAYOUTS[name]


def test_plain_configs_get_the_plain_grid():
    for name in ('toy/toy_eva02_det.py', 'eva02_upernet_ade20k.py',
                 'dinov2_vitdet_coco.py'):
        cfg = _cfg(name)
        assert not is_apt_backbone_cfg(cfg)
        patch = cfg.model.backbone.get('patch_size', 16)  # DINOv2: 14
        assert tokenizer_from_config(cfg).patch_sizes == (patch, )
    assert is_apt_backbone('APTEVA02') and is_apt_backbone('APTViT')
    assert not is_apt_backbone('EVA02') and not is_apt_backbone('ViT')


def test_drawn_layout_of_an_apt_config_has_merged_patches():
    from mmapt.apis.views import normalise
    tokenizer = tokenizer_from_config(_cfg('toy/toy_apt_det.py'))
    image = np.full((256, 256, 3), 120, np.uint8)  # flat top half
    image[128:] = np.random.default_rng(0).integers(0, 255, (128, 256, 3))
    batch = normalise([image], tokenizer.mean, tokenizer.std)
    _, caption, layout = draw_patch_grid(batch, tokenizer)
    sides = set((layout.side * tokenizer.patch_size).tolist())
    assert max(sides) == 128 and 16 in sides
    assert '128px:2' in caption


@pytest.fixture
def flat_photo(tmp_path):
    """A 600 x 480 photo: flat sky over noise."""
    image = np.full((480, 600, 3), 200, np.uint8)
    image[240:] = np.random.default_rng(1).integers(0, 255, (240, 600, 3))
    path = tmp_path / 'photo.png'
    Image.fromarray(image).save(path)
    return path


def test_demo_draws_merged_patches_at_the_drawing_size(flat_photo, tmp_path,
                                                       capsys):
    """The demo on the APT toy detector: its grid has merged patches (the
    regression drew a plain 16-px grid), and the prediction comes back
    at the size the picture is drawn, not the photo's."""
    demo = load_tool('demo/image_demo.py')
    seen = {}
    draw = demo.draw_prediction

    def spy(model, image, result, *args):
        seen['image'] = image.shape[:2]
        seen['masks'] = tuple(result.pred_instances.masks.shape[-2:])
        return draw(model, image, result, *args)

    demo.draw_prediction = spy
    out = tmp_path / 'demo.png'
    demo.main([
        str(flat_photo), TOY_DET, '--device', 'cpu', '--out-file',
        str(out), '--max-size', '1000'
    ])
    printed = capsys.readouterr().out
    counts = dict(
        part.split(':') for part in printed.split('; ')[-1].split()
        if 'px:' in part)
    # The sky (top 102 rows of the 256 canvas) merges, the noise does not.
    assert int(counts['64px']) > 0 and int(counts['16px']) > 0
    # Three panels in 1000 px: 328 px each, the photo 328 x 262.
    assert seen['image'] == (262, 328) and seen['masks'] == (262, 328)
    picture = np.asarray(Image.open(out))
    assert picture.shape[1] <= 1000


def test_demo_refuses_a_folder_and_an_unwritable_output(tmp_path):
    demo = load_tool('demo/image_demo.py')
    with pytest.raises(SystemExit, match='is a directory, not an image file'):
        demo.main([str(tmp_path), TOY_DET])
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    image = tmp_path / 'img.png'
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    with pytest.raises(SystemExit, match='--out-file .*blocker is a file'):
        demo.main([str(image), TOY_DET, '--out-file', str(blocker / 'o.png')])
    with pytest.raises(SystemExit, match="unknown patch scorer 'entorpy'"):
        demo.main([
            str(image), TOY_DET, '--out-file',
            str(tmp_path / 'o.png'), '--cfg-options',
            'model.backbone.scorer=entorpy'
        ])


@pytest.mark.parametrize('tool', ['train', 'test'])
@pytest.mark.parametrize('option,match', [
    ('model.backbone.scorer=entorpy', "unknown patch scorer 'entorpy'"),
    ('model.backbone.keep_ratio=0', 'keep_ratio must be in'),
    ('model.backbone.token_budget=1', 'token_budget 1 is below'),
])
def test_tools_refuse_apt_options_before_reading_data(tool, option, match,
                                                      tmp_path, monkeypatch,
                                                      capsys):
    """tools/train.py and tools/test.py stop in one line at the config,
    before they look for data or build the model."""
    module = load_tool(f'tools/{tool}.py')

    def not_reached(*args, **kwargs):
        raise AssertionError('data or model reached with a bad APT option')

    monkeypatch.setattr(module, 'check_data', not_reached)
    monkeypatch.setattr(module, 'build_runner', not_reached)
    argv = [tool, TOY_DET] + (['ckpt.pth'] if tool == 'test' else [])
    monkeypatch.setattr(
        sys, 'argv', argv +
        ['--work-dir', str(tmp_path), '--cfg-options', option])
    with pytest.raises(SystemExit) as info:
        with exit_on_input_error():
            module.main()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith('ValueError: ')
    assert re.search(match, err) and 'toy_apt_det.py' in err


def test_tools_refuse_unwritable_outputs_before_the_work(tmp_path, capsys):
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    image = tmp_path / 'img.png'
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    vis = load_tool('tools/analysis/visualize_patches.py')
    assert vis.main([str(image), '--out', str(blocker / 'vis')]) == 2
    assert 'blocker is a file' in capsys.readouterr().err
    calib = load_tool('tools/analysis/calibrate_thresholds.py')
    assert calib.main([
        str(image), '--target-keep', '0.5', '--plot',
        str(blocker / 'plot.png')
    ]) == 2
    assert '--plot' in capsys.readouterr().err
    scorer_eval = load_tool('tools/analysis/scorer_eval.py')
    assert scorer_eval.main([
        TOY_DET, 'ckpt.pth', '--setting', 'a', '--out',
        str(blocker / 'r.json')
    ]) == 2
    assert '--out' in capsys.readouterr().err
    out = ['--out', str(blocker / 'b.json')]
    for tool, argv in (('tools/analysis/benchmark.py', [
            TOY_DET, '--compare', TOY_DET, '--images',
            str(image)
    ]), ('tools/analysis/gpu_benchmark.py', ['--device', 'cpu', '--quick'])):
        with pytest.raises(SystemExit):
            load_tool(tool).parse_args(argv + out)
        assert 'blocker is a file' in capsys.readouterr().err


@pytest.mark.parametrize('config',
                         ['toy/toy_apt_det.py', 'toy/toy_apt_seg.py'])
def test_predictions_at_size_rescale_to_the_drawing(config):
    """Within ``predictions_at_size`` the model's predictions come at the
    drawing size: the same detections with boxes scaled, masks and
    segmentation maps of that size."""
    import torch

    from mmapt.apis.inference import drawing_size, predictions_at_size
    cfg = _cfg(config)
    cfg.model.backbone.init_cfg = None
    rng = np.random.default_rng(2)
    image = np.full((300, 400, 3), 90, np.uint8)
    image[150:] = rng.integers(0, 255, (150, 400, 3))
    size = drawing_size(300, 400, 200)
    assert size == (150, 200)
    torch.manual_seed(0)
    if cfg.default_scope == 'mmdet':
        from mmdet.apis import inference_detector, init_detector
        model = init_detector(cfg, None, device='cpu')
        full = inference_detector(model, image).pred_instances
        with predictions_at_size(model, size):
            small = inference_detector(model, image).pred_instances
        assert len(full) > 0 and small.masks.shape[-2:] == size
        torch.testing.assert_close(small.scores, full.scores)
        torch.testing.assert_close(
            small.bboxes, full.bboxes / 2, atol=1e-3, rtol=1e-4)
    else:
        from mmseg.apis import inference_model, init_model
        model = init_model(cfg, None, device='cpu')
        assert inference_model(model, image).pred_sem_seg.shape == (300, 400)
        with predictions_at_size(model, size):
            small = inference_model(model, image)
        assert small.pred_sem_seg.shape == size
        assert small.seg_logits.shape[-2:] == size
    assert not model._forward_pre_hooks  # the hook is removed
