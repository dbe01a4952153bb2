"""The tools with the ``learned`` scorer: visualize_patches draws its
layout and score map from a checkpoint; scorer_eval fills the checkpoint
into its settings."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_tokenizer_tools import load_tool

from mmapt.tokenizer import build_scorer
from mmapt.tokenizer.learned_scorer import learned_scorer_cfg, with_checkpoint


@pytest.fixture(scope='module')
def scorer_file(tmp_path_factory):
    torch.manual_seed(0)
    net = build_scorer(dict(type='learned', patch_sizes=(32, 64))).network
    path = tmp_path_factory.mktemp('scorer') / 'iter_1.pth'
    torch.save(
        dict(state_dict={
            'scorer.' + k: v
            for k, v in net.state_dict().items()
        }), path)
    return str(path)


def test_visualize_patches_learned(scorer_file, tmp_path, capsys):
    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.default_rng(0)
    image = np.full((128, 192, 3), 90, np.uint8)
    image[:, 96:] = rng.integers(0, 255, (128, 96, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / 'half.png')
    tool = load_tool('tools/analysis/visualize_patches.py')
    out = tmp_path / 'vis'
    args = [
        str(folder), '--patch-sizes', '16', '32', '64', '--thresholds', '0.1',
        '0.1', '--scorer', 'learned', '--keep-ratio', '0.5', '--out',
        str(out), '--json'
    ]
    assert tool.main(args + ['--scorer-checkpoint', scorer_file]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row['tokens'] <= row['baseline_tokens'] // 2
    assert os.listdir(out) == ['half_patches.png']
    picture = Image.open(out / 'half_patches.png')
    assert picture.width > 2 * 192  # the layout and the score map beside it
    assert tool.main(args) == 2
    assert '--scorer learned needs --scorer-checkpoint PATH' in \
        capsys.readouterr().err


def test_scorer_config_helpers(scorer_file):
    assert learned_scorer_cfg('contrast', None, (32, )) == 'contrast'
    with pytest.raises(ValueError, match='use it with --scorer learned'):
        learned_scorer_cfg('entropy', scorer_file, (32, ))
    assert learned_scorer_cfg('learned', scorer_file, (32, 64)) == dict(
        type='learned', checkpoint=scorer_file, patch_sizes=(32, 64))
    assert with_checkpoint('learned', 'x.pth') == dict(
        type='learned', checkpoint='x.pth')
    assert with_checkpoint('contrast', 'x.pth') == 'contrast'
    kept = dict(type='learned', checkpoint='mine.pth')
    assert with_checkpoint(kept, 'x.pth') == kept
    wrapped = with_checkpoint(dict(type='importance', base='learned'), 'x.pth')
    assert wrapped['base'] == dict(type='learned', checkpoint='x.pth')


def test_scorer_eval_parses_the_new_options():
    tool = load_tool('tools/analysis/scorer_eval.py')
    args = tool.parse_args([
        'c.py', 'm.pth', '--setting', 'a', 'model.backbone.scorer=learned',
        '--scorer-checkpoint', 's.pth', '--drift'
    ])
    assert args.scorer_checkpoint == 's.pth' and args.drift


def test_feature_drift_over_slide_windows():
    """A segmentor's drift is taken over the windows of its slide
    inference: mmseg's positions, 0 with nothing merged, and the windows'
    sums combined (not the mean of per-window drifts)."""
    from types import SimpleNamespace

    from conftest import flat_and_noise_images
    from test_models.test_distillers.test_scorer_distiller import BACKBONE

    from mmapt.benchmark.scorer_eval import feature_drift, slide_crops
    from mmapt.models.distillers.scorer_distiller import drift_sums
    from mmapt.registry import MODELS
    x = flat_and_noise_images(2, 128, 200, (64, 64), seed=0)
    crops = list(slide_crops(x, (128, 128), (64, 64)))
    # Columns 0, 64, then 72 (the last window flush with the border).
    assert [tuple(c.shape[-2:]) for c in crops] == [(128, 128)] * 3
    torch.testing.assert_close(crops[1], x[..., 64:192])
    torch.testing.assert_close(crops[2], x[..., 72:])
    torch.manual_seed(0)
    backbone = MODELS.build(BACKBONE).eval()
    model = SimpleNamespace(
        backbone=backbone,
        test_cfg=dict(mode='slide', crop_size=(128, 128), stride=(64, 64)))
    got = feature_drift(model, x)
    sums = [drift_sums(backbone, c) for c in crops]
    want = (sum(n for n, _ in sums) / sum(d for _, d in sums)).sqrt()
    torch.testing.assert_close(got, want)
    assert bool((got > 0).all())
    backbone.tokenizer.thresholds = (-1.0, -1.0)
    assert float(feature_drift(model, x).abs().max()) < 1e-6
