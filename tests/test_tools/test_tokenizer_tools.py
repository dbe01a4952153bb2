"""The tokenizer's command-line tools on generated images."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image


def load_tool(relative: str):
    path = os.path.join(ROOT, relative)
    spec = importlib.util.spec_from_file_location(
        os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory):
    """Three images: plain, noisy, and half plain / half noisy (non-square)."""
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((256, 512, 3), 80,
                            np.uint8)).save(folder / 'a_plain.png')
    Image.fromarray(rng.integers(0, 255, (256, 256, 3),
                                 dtype=np.uint8)).save(folder / 'b_noise.png')
    half = np.full((240, 320, 3), 30, np.uint8)
    half[:, 160:] = rng.integers(0, 255, (240, 160, 3), dtype=np.uint8)
    Image.fromarray(half).save(folder / 'c_half.jpg')
    return folder


def test_visualize_json_and_pngs(image_dir, tmp_path, capsys):
    tool = load_tool('tools/analysis/visualize_patches.py')
    out = tmp_path / 'vis'
    assert tool.main([
        str(image_dir), '--canvas', '512', '--patch-sizes', '16', '32', '64',
        '128', '--thresholds', '2', '2', '0.3', '--out',
        str(out), '--json'
    ]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [os.path.basename(r['image'])
            for r in rows] == ['a_plain.png', 'b_noise.png', 'c_half.jpg']
    for row in rows:
        assert set(row) == {'image', 'tokens', 'baseline_tokens', 'keep_ratio'}
        assert row['baseline_tokens'] == 32 * 32
        assert row['keep_ratio'] == pytest.approx(
            row['tokens'] / row['baseline_tokens'], abs=1e-4)
    # Plain image + 114 padding: every 128 px block is one token.
    assert rows[0]['tokens'] == 16
    # Pure noise, resized to fill the canvas: nothing merges.
    assert rows[1]['tokens'] == 1024
    assert rows[0]['tokens'] < rows[2]['tokens'] < rows[1]['tokens']
    pngs = sorted(os.listdir(out))
    assert pngs == [
        'a_plain_patches.png', 'b_noise_patches.png', 'c_half_patches.png'
    ]
    with Image.open(out / pngs[0]) as image:
        # Layout and score map side by side, 8 px apart; caption bands.
        assert image.width == 2 * 512 + 8 and image.height > 512
        picture = np.asarray(image.convert('RGB'))
    # The plain image's map is dark (score 0) where the noise one is not.
    with Image.open(out / pngs[1]) as image:
        noise_map = np.asarray(image.convert('RGB'))[:512, 520:]
    assert picture[:512, 520:].mean() < noise_map.mean()


def test_visualize_table_and_crop(image_dir, capsys):
    tool = load_tool('tools/analysis/visualize_patches.py')
    assert tool.main([
        str(image_dir / 'c_half.jpg'), '--crop', '256', '--patch-sizes', '16',
        '32', '--thresholds', '5.75'
    ]) == 0
    out = capsys.readouterr().out
    assert 'c_half.jpg' in out and 'median' in out and '256' in out


def test_visualize_rejects_bad_thresholds(image_dir, capsys):
    tool = load_tool('tools/analysis/visualize_patches.py')
    assert tool.main([
        str(image_dir), '--patch-sizes', '16', '32', '64', '--thresholds', '2'
    ]) == 2
    assert 'need 2 thresholds' in capsys.readouterr().err


def test_calibration_reaches_target(image_dir, capsys):
    tool = load_tool('tools/analysis/calibrate_thresholds.py')
    assert tool.main([
        str(image_dir), '--canvas', '256', '--patch-sizes', '16', '32', '64',
        '--reference', '2', '1', '--target-keep', '0.5', '--json'
    ]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result['achieved_keep'] <= 0.5
    thresholds = result['thresholds']
    assert thresholds[0] == pytest.approx(2 * thresholds[1], rel=1e-3)
    # Just below the found thresholds the target is missed: it is the
    # boundary, not any setting that merges everything.
    from mmapt.apis.images import list_images, load_rgb
    from mmapt.apis.views import normalise, to_canvas
    from mmapt.tokenizer import PatchTokenizer
    tok = PatchTokenizer(16, [t * 0.97 for t in thresholds])
    keeps = [
        float(tok(normalise([to_canvas(load_rgb(p), 256)])).keep_ratio[0])
        for p in list_images(str(image_dir))
    ]
    assert sum(keeps) / len(keeps) > 0.5


def test_tokenizer_benchmark_reports_json():
    result = subprocess.run([
        sys.executable,
        os.path.join(ROOT, 'tools/analysis/benchmark_tokenizer.py'), '--batch',
        '1', '--size', '256', '--repeat', '1'
    ],
                            capture_output=True,
                            text=True,
                            check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report['size'] == 256 and report['median_ms'] > 0
    assert 0 < report['tokens'] < 256
    assert report['entropy_one_image_peak_mib'] >= 0


def test_visualize_scorer_and_budget(image_dir, tmp_path, capsys):
    tool = load_tool('tools/analysis/visualize_patches.py')
    assert tool.main([
        str(image_dir), '--canvas', '256', '--patch-sizes', '16', '32', '64',
        '--thresholds', '1', '1', '--scorer', 'gradient', '--keep-ratio',
        '0.5', '--json', '--out',
        str(tmp_path)
    ]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Budget mode: every image within one split (3 tokens) of 128 of 256.
    assert all(126 <= row['tokens'] <= 128 for row in rows), rows
    assert len(os.listdir(tmp_path)) == 3
    assert tool.main([str(image_dir), '--scorer', 'nope']) == 2
    assert 'unknown patch scorer' in capsys.readouterr().err
    assert tool.main([str(image_dir), '--scorer', 'importance']) == 2
    assert 'needs a map per image' in capsys.readouterr().err


def test_calibration_of_scorers_and_budgets_with_plot(image_dir, tmp_path,
                                                      capsys):
    tool = load_tool('tools/analysis/calibrate_thresholds.py')
    plot = tmp_path / 'not_yet' / 'keep.png'  # the folder is created
    assert tool.main([
        str(image_dir), '--canvas', '256', '--patch-sizes', '16', '32', '64',
        '--scorers', 'entropy', 'gradient', '--target-keep', '0.3',
        '--keep-ratios', '0.5', '0.8', '--plot',
        str(plot), '--json'
    ]) == 0
    result = json.loads(capsys.readouterr().out)
    settings = result['settings']
    assert [(s['scorer'], s['mode'])
            for s in settings] == [('entropy', 'thresholds'),
                                   ('entropy', 'keep_ratio'),
                                   ('entropy', 'keep_ratio'),
                                   ('gradient', 'thresholds'),
                                   ('gradient', 'keep_ratio'),
                                   ('gradient', 'keep_ratio')]
    for s in settings:
        if s['mode'] == 'thresholds':
            assert s['keep_mean'] <= 0.6
        else:  # budget mode: the same keep ratio on every image
            assert s['keep_max'] <= s['keep_ratio']
            assert s['keep_min'] >= s['keep_ratio'] - 3 / 256
    # The gradient thresholds are in its own unit, searched separately.
    assert settings[3]['thresholds'] != settings[0]['thresholds']
    assert result['thresholds'] == settings[0]['thresholds']  # first scorer
    assert set(
        result['score_quantiles_10_25_50_75_90']) == {'entropy', 'gradient'}
    with Image.open(plot) as image:
        assert image.format == 'PNG' and image.width > 300


def test_calibration_needs_a_goal(image_dir, capsys):
    tool = load_tool('tools/analysis/calibrate_thresholds.py')
    assert tool.main([str(image_dir)]) == 2
    assert '--target-keep' in capsys.readouterr().err
    assert tool.main([str(image_dir), '--keep-ratios', '1.5']) == 2
    assert 'in (0, 1]' in capsys.readouterr().err
    assert tool.main([str(image_dir), '--checkpoint', 'x.pth']) == 2
    assert 'go together' in capsys.readouterr().err


@pytest.fixture(scope='module')
def tiny_plain_model(tmp_path_factory):
    """A config + checkpoint of a small random plain EVA-02 (the weights a
    detector checkpoint holds under ``backbone.``)."""
    import torch

    from mmapt.models.backbones.eva02 import EVA02
    folder = tmp_path_factory.mktemp('tiny_model')
    backbone = dict(
        type='EVA02',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=128,
        patch_size=16,
        pos_embed_grid=8,
        init_cfg=None)
    config = folder / 'tiny.py'
    config.write_text(f'model = dict(backbone={backbone!r})\n')
    torch.manual_seed(0)
    kwargs = dict(backbone)
    kwargs.pop('type')
    model = EVA02(**kwargs)
    state = {'backbone.' + k: v for k, v in model.state_dict().items()}
    state['neck.weight'] = torch.zeros(1)
    checkpoint = folder / 'tiny.pth'
    torch.save(dict(state_dict=state, meta={}), checkpoint)
    return str(config), str(checkpoint)


def test_feature_drift_recommends_cheapest_within_drift(
        image_dir, tiny_plain_model, capsys):
    tool = load_tool('tools/analysis/calibrate_thresholds.py')
    config, checkpoint = tiny_plain_model
    common = [
        str(image_dir), '--canvas', '128', '--patch-sizes', '16', '32', '64',
        '--config', config, '--checkpoint', checkpoint, '--scorers', 'entropy',
        'contrast', '--keep-ratios', '0.25', '0.5', '1.0', '--json'
    ]
    assert tool.main(common + ['--max-drift', '1e-4']) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert 'feature drift (forwards)' in captured.err  # progress
    by_key = {(s['scorer'], s['keep_ratio']): s for s in result['settings']}
    for scorer in ('entropy', 'contrast'):
        full = by_key[(scorer, 1.0)]
        # Nothing merged: APT equals its plain model.
        assert full['drift_rel_mean'] < 1e-4 and full['cosine_mean'] > 0.9999
        assert by_key[(scorer, 0.25)]['drift_rel_mean'] > \
            by_key[(scorer, 1.0)]['drift_rel_mean'] + 1e-3
    assert result['recommended']['keep_ratio'] == 1.0
    assert tool.main(common + ['--max-drift', '100']) == 0
    result = json.loads(capsys.readouterr().out)
    assert result['recommended']['keep_ratio'] == 0.25


def test_feature_drift_rejects_a_checkpoint_of_another_model(
        image_dir, tiny_plain_model, tmp_path, capsys):
    import torch
    tool = load_tool('tools/analysis/calibrate_thresholds.py')
    config, _ = tiny_plain_model
    wrong = tmp_path / 'wrong.pth'
    torch.save({'backbone.blocks.0.foo': torch.zeros(1)}, wrong)
    assert tool.main([
        str(image_dir), '--canvas', '128', '--patch-sizes', '16', '32', '64',
        '--config', config, '--checkpoint',
        str(wrong), '--keep-ratios', '0.5'
    ]) == 2
    assert 'does not fit the EVA02 backbone' in capsys.readouterr().err
