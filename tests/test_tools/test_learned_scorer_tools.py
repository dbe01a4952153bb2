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
    assert tool.main(args + ['--checkpoint', scorer_file]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row['tokens'] <= row['baseline_tokens'] // 2
    assert os.listdir(out) == ['half_patches.png']
    picture = Image.open(out / 'half_patches.png')
    assert picture.width > 2 * 192  # the layout and the score map beside it
    assert tool.main(args) == 2
    assert '--scorer learned needs --checkpoint' in capsys.readouterr().err


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
