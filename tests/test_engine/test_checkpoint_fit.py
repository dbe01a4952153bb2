"""Weights of another architecture refuse to load.

An EVA-02-L-shaped state dict (built on the meta device: shapes only, a
37 kB file) given to a smaller model as ``init_cfg`` or ``load_from`` stops
before the first iteration, naming both architectures and the share of
tensors that would load; ``allow_partial`` / ``allow_partial_load`` load
what fits, and fitting checkpoints (a plain one into the APT model, a
position table of another grid) load as before.
"""
import os.path as osp
import re
import runpy
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT

from mmapt.checkpoints.checkpoint_fit import CheckpointFitError
from mmapt.engine import SafeCheckpointHook, safe_checkpoint_loading
from mmapt.models import APTEVA02, EVA02

TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
L_ARCH = (r'the checkpoint has 24 blocks of 1024 channels( \(backbone\))?, '
          r'the model 12 of 192')


@pytest.fixture(scope='module')
def large_file(tmp_path_factory):
    """``(backbone file, detector file)`` holding EVA-02-L's shapes."""
    folder = tmp_path_factory.mktemp('large')
    with torch.device('meta'):
        state = EVA02(arch='large', img_size=1024).state_dict()
    backbone, detector = str(folder / 'l.pth'), str(folder / 'l_det.pth')
    torch.save(dict(state_dict=state), backbone)
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in state.items()
        }), detector)
    return backbone, detector


def _tiny(cls=EVA02, **init):
    return cls(
        arch='tiny',
        img_size=128,
        init_cfg=dict(type='Pretrained', **init) if init else None)


def test_large_weights_into_a_tiny_backbone_are_refused(large_file):
    model = _tiny(checkpoint=large_file[0])
    before = model.blocks[0].norm1.weight.clone()
    with safe_checkpoint_loading(), pytest.raises(CheckpointFitError) as info:
        model.init_weights()
    message = str(info.value)
    assert re.search(L_ARCH, message)
    assert "0 of the model's 159 tensors (0%) would load" in message
    assert 'allow_partial=True' in message and large_file[0] in message
    assert torch.equal(model.blocks[0].norm1.weight, before)


def test_allow_partial_loads_what_fits(large_file):
    model = _tiny(checkpoint=large_file[0], allow_partial=True)
    with safe_checkpoint_loading():
        model.init_weights()  # mmengine skips every tensor, as before
    assert model.init_cfg['allow_partial'] is True  # the config is kept


def test_fitting_checkpoints_still_load(tmp_path):
    """A plain tiny backbone into the APT one (apt_embed.* missing), with a
    position table of another grid (resampled)."""
    source = EVA02(arch='tiny', img_size=64, pos_embed_grid=4)
    path = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=source.state_dict()), path)
    model = _tiny(APTEVA02, checkpoint=path)
    with safe_checkpoint_loading():
        model.init_weights()
    assert torch.equal(model.blocks[3].attn.qkv.weight,
                       source.blocks[3].attn.qkv.weight)


def test_detector_checkpoint_without_prefix_is_refused(large_file, tmp_path):
    """Keys that name nothing in the backbone (a whole detector given
    without ``prefix='backbone.'``): 0 tensors would load."""
    source = EVA02(arch='tiny', img_size=128)
    path = str(tmp_path / 'det.pth')
    torch.save(
        dict(state_dict={
            f'backbone.{k}': v
            for k, v in source.state_dict().items()
        }), path)
    with pytest.raises(CheckpointFitError, match="look like 'backbone."):
        _tiny(checkpoint=path).init_weights()
    model = _tiny(checkpoint=path, prefix='backbone.')
    model.init_weights()
    assert torch.equal(model.pos_embed, source.pos_embed)


def _runner(model, path='x.pth'):
    return SimpleNamespace(model=model, _load_from=path)


def test_hook_refuses_a_load_from_that_does_not_fit(large_file):
    """SafeCheckpointHook.after_load_checkpoint: the Runner has read the
    file and copies nothing until the hook returns."""
    detector = torch.nn.Module()
    detector.backbone = _tiny()
    detector.head = torch.nn.Linear(192, 3)
    ckpt = torch.load(large_file[1], weights_only=True)
    with pytest.raises(CheckpointFitError) as info:
        SafeCheckpointHook(interval=1).after_load_checkpoint(
            _runner(detector), ckpt)
    assert re.search(L_ARCH, str(info.value)).group(1)  # names the part
    assert 'allow_partial_load=True' in str(info.value)
    SafeCheckpointHook(
        interval=1, allow_partial_load=True).after_load_checkpoint(
            _runner(detector), ckpt)
    # The same detector's own (DataParallel-prefixed) weights fit; another
    # class count in the head is refused, naming the tensor.
    own = {f'module.{k}': v for k, v in detector.state_dict().items()}
    SafeCheckpointHook(interval=1).after_load_checkpoint(
        _runner(detector), dict(state_dict=own))
    own['module.head.weight'] = torch.zeros(5, 192)
    with pytest.raises(CheckpointFitError, match=r'head.weight: checkpoint'):
        SafeCheckpointHook(interval=1).after_load_checkpoint(
            _runner(detector), dict(state_dict=own))


@pytest.mark.parametrize('how', ['init_cfg', 'load_from'])
def test_train_tool_stops_before_the_first_iteration(how, large_file,
                                                     toy_coco_cwd, tmp_path,
                                                     monkeypatch, capsys):
    config = tmp_path / 'wrong_weights.py'
    if how == 'init_cfg':
        config.write_text(
            f'_base_ = {TOY_DET!r}\nmodel = dict(backbone=dict(init_cfg=dict('
            f'_delete_=True, type="Pretrained", '
            f'checkpoint={large_file[0]!r})))\n')
    else:
        config.write_text(
            f'_base_ = {TOY_DET!r}\nload_from = {large_file[1]!r}\n')
    monkeypatch.chdir(toy_coco_cwd)
    tool = osp.join(ROOT, 'tools', 'train.py')
    monkeypatch.setattr(
        sys, 'argv',
        [tool, str(config), '--work-dir',
         str(tmp_path / 'work')])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(tool, run_name='__main__')
    assert info.value.code == 2
    out = capsys.readouterr()
    last = [line for line in out.err.splitlines() if line.strip()][-1]
    assert 'Traceback' not in out.err and re.search(L_ARCH, last)
    assert 'Iter(train)' not in out.out + out.err
    assert not list((tmp_path / 'work').glob('iter_*.pth'))


def test_every_config_checks_what_it_loads():
    """The load_from check lives in SafeCheckpointHook: every shipped
    config uses it."""
    import glob

    from mmengine.config import Config
    paths = sorted(
        glob.glob(osp.join(ROOT, 'configs', '*.py')) +
        glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py')))
    assert len(paths) > 20
    for path in paths:
        hooks = Config.fromfile(path).default_hooks
        assert hooks.checkpoint.type == 'SafeCheckpointHook', path
