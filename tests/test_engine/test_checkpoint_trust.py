"""Checkpoints load without running their code.

A malicious pickle (its ``__reduce__`` writes a marker file) is refused on
every path that reads a checkpoint, its code never runs, and the message
names the file, the refused global and the opt-in. What mmapt writes and
reads for real (Runner checkpoints with the message hub and generator
states, the converters' outputs, the released EVA-02 layouts) loads
without the opt-in; the opt-in loads a legacy pickle and warns once.

The tools run in-process (``runpy``) to keep the file fast.
"""
import argparse
import os
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local

from mmapt.checkpoints import checkpoint_file
from mmapt.checkpoints.checkpoint_file import (UntrustedCheckpointError,
                                               load_checkpoint_file)
from mmapt.checkpoints.safe_load import TRUST_ENV, TRUST_FLAG
from mmapt.engine import safe_checkpoint_loading, trusted_checkpoints

TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
TOY_PLAIN_DET = osp.join(ROOT, 'configs', 'toy', 'toy_eva02_det.py')
TOY_SEG = osp.join(ROOT, 'configs', 'toy', 'toy_apt_seg.py')
CONVERTERS = ('eva02_to_mmapt.py', 'eva02_det_to_mmapt.py',
              'eva02_seg_to_mmapt.py', 'vit_to_mmapt.py')


class Payload:
    """Writes the marker file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({self.marker!r}, "w").write("ran")', ))


@pytest.fixture
def evil(tmp_path):
    """``(zip file, legacy file, marker)``: checkpoints with real-looking
    weights whose unpickling would create ``marker``."""
    marker = str(tmp_path / 'MARKER')
    ckpt = dict(
        state_dict={'backbone.pos_embed': torch.zeros(1, 4, 8)},
        meta=dict(payload=Payload(marker)))
    zipped, legacy = str(tmp_path / 'evil.pth'), str(tmp_path / 'legacy.pth')
    torch.save(ckpt, zipped)
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    return zipped, legacy, marker


def _refused(message, path):
    """The refusal names the file, the global and both opt-ins."""
    assert path in message and 'builtins.exec' in message, message
    assert TRUST_FLAG in message and TRUST_ENV in message, message


@pytest.fixture(autouse=True)
def no_trust_env(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


def _run_script(path, argv, monkeypatch):
    """Run a tool's ``__main__`` in-process; its exit status."""
    monkeypatch.setattr(sys, 'argv', [path, *argv])
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as err:
        return err.code
    return 0


def _one_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert 'Traceback' not in text
    return lines[-1]


# ------------------------------------------------------------ the library
def test_malicious_pickle_is_refused_by_the_loader(evil):
    zipped, legacy, marker = evil
    for path in (zipped, legacy):
        with pytest.raises(UntrustedCheckpointError) as info:
            load_checkpoint_file(path)
        _refused(str(info.value), path)
    assert not osp.exists(marker)
    # The payload is real: a full unpickling runs it.
    torch.load(zipped, weights_only=False)
    assert osp.exists(marker)


@pytest.mark.parametrize('fmt', ['zip', 'legacy'])
def test_test_tool_refuses_in_one_line(fmt, evil, toy_coco_cwd, tmp_path,
                                       monkeypatch, capsys):
    """tools/test.py, both torch formats: exit 2, one line, no code run."""
    path = evil[0] if fmt == 'zip' else evil[1]
    monkeypatch.chdir(toy_coco_cwd)
    code = _run_script(
        osp.join(ROOT, 'tools', 'test.py'),
        [TOY_DET, path, '--work-dir',
         str(tmp_path / 'work')], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2
    _refused(_one_line(err), path)
    assert not osp.exists(evil[2])


@pytest.mark.parametrize('how', ['resume', 'load_from'])
def test_train_tool_refuses_before_building(how, evil, toy_coco_cwd, tmp_path,
                                            monkeypatch, capsys):
    """tools/train.py --resume PATH and load_from: refused before the
    Runner is built."""
    monkeypatch.chdir(toy_coco_cwd)
    args = ['--resume', evil[0]] if how == 'resume' else \
        ['--cfg-options', f'load_from={evil[0]}']
    code = _run_script(
        osp.join(ROOT, 'tools', 'train.py'),
        [TOY_DET, '--work-dir',
         str(tmp_path / 'work'), *args], monkeypatch)
    assert code == 2
    _refused(_one_line(capsys.readouterr().err), evil[0])
    assert not osp.exists(evil[2])


def test_demo_refuses_before_building(evil, tmp_path, monkeypatch, capsys):
    image = str(tmp_path / 'img.png')
    cv2.imwrite(image, np.full((64, 96, 3), 128, np.uint8))
    code = _run_script(
        osp.join(ROOT, 'demo', 'image_demo.py'),
        [image, TOY_DET, evil[0], '--device', 'cpu'], monkeypatch)
    assert isinstance(code, str) and code.startswith('error: checkpoint')
    _refused(code, evil[0])
    assert not osp.exists(evil[2])


@pytest.mark.parametrize('tool', CONVERTERS)
def test_converters_refuse(tool, evil, tmp_path, monkeypatch, capsys):
    dst = str(tmp_path / 'out.pth')
    code = _run_script(
        osp.join(ROOT, 'tools', 'model_converters', tool), [evil[1], dst],
        monkeypatch)
    assert code == 1
    _refused(_one_line(capsys.readouterr().err), evil[1])
    assert not osp.exists(evil[2]) and not osp.exists(dst)


def test_calibrate_thresholds_refuses(evil, tmp_path, monkeypatch, capsys):
    image = str(tmp_path / 'img.png')
    cv2.imwrite(
        image,
        np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8))
    code = _run_script(
        osp.join(ROOT, 'tools', 'analysis', 'calibrate_thresholds.py'), [
            image, '--canvas', '128', '--target-keep', '0.5', '--config',
            TOY_PLAIN_DET, '--checkpoint', evil[0]
        ], monkeypatch)
    assert code == 2
    _refused(_one_line(capsys.readouterr().err), evil[0])
    assert not osp.exists(evil[2])


def test_scorer_eval_refuses(evil, monkeypatch, capsys):
    code = _run_script(
        osp.join(ROOT, 'tools', 'analysis', 'scorer_eval.py'),
        [TOY_DET, evil[0], '--setting', 'a', 'model.backbone.keep_ratio=0.5'],
        monkeypatch)
    assert code == 2
    _refused(_one_line(capsys.readouterr().err), evil[0])
    assert not osp.exists(evil[2])


def test_inference_apis_refuse(evil):
    """init_detector / init_model (mmengine's load_checkpoint) inside
    safe_checkpoint_loading(); outside it torch's own weights_only default
    refuses too."""
    import pickle

    from mmdet.apis import init_detector
    from mmseg.apis import init_model
    cfg = Config.fromfile(TOY_DET)
    cfg.model.backbone.init_cfg = None
    with safe_checkpoint_loading():
        with pytest.raises(UntrustedCheckpointError) as info:
            init_detector(cfg, evil[0], device='cpu')
        _refused(str(info.value), evil[0])
        seg = Config.fromfile(TOY_SEG)
        seg.model.backbone.init_cfg = None
        with pytest.raises(UntrustedCheckpointError):
            init_model(seg, evil[1], device='cpu')
    with pytest.raises(pickle.UnpicklingError):
        init_detector(cfg, evil[0], device='cpu')
    assert not osp.exists(evil[2])


def test_pretrained_init_and_model_pair_refuse(evil):
    """A backbone's Pretrained init_cfg; the analysis tools' model pair
    (benchmark.py, get_flops.py)."""
    from mmapt.benchmark.analysis import build_model_pair
    from mmapt.models import EVA02
    from mmapt.registry import MODELS
    backbone = EVA02(
        arch='tiny',
        img_size=64,
        init_cfg=dict(type='Pretrained', checkpoint=evil[1]))
    with safe_checkpoint_loading():
        with pytest.raises(UntrustedCheckpointError):
            backbone.init_weights()
    apt_cfg, base_cfg = Config.fromfile(TOY_DET), Config.fromfile(
        TOY_PLAIN_DET)
    with pytest.raises(UntrustedCheckpointError):
        build_model_pair(apt_cfg, base_cfg, MODELS, evil[0])
    assert not osp.exists(evil[2])


def test_loader_table_is_restored_after_nested_blocks(evil):
    path = evil[0]
    assert CheckpointLoader._get_checkpoint_loader(path) is load_from_local
    with safe_checkpoint_loading():
        with trusted_checkpoints():  # the old name: the same safe loading
            with pytest.raises(UntrustedCheckpointError):
                CheckpointLoader.load_checkpoint(path)
        with pytest.raises(UntrustedCheckpointError):
            CheckpointLoader.load_checkpoint(path)
    assert CheckpointLoader._get_checkpoint_loader(path) is load_from_local
    assert not osp.exists(evil[2])


# ------------------------------------------------- what must keep loading
def test_runner_checkpoint_with_generator_states_loads_safely(tmp_path):
    """A SafeCheckpointHook checkpoint of an mmengine Runner (message hub,
    AdamW state, a scheduler, numpy / Python / torch generator states)
    loads without the opt-in, resumes the Runner and holds what was
    saved."""
    from fixtures.tiny_runner import tiny_runner
    tiny_runner(str(tmp_path)).train()
    path = str(tmp_path / 'iter_2.pth')
    ckpt = load_checkpoint_file(path, trust=False)
    assert set(ckpt) >= {
        'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers',
        'rng_state'
    }
    assert ckpt['rng_state']['numpy'][0] == 'MT19937'
    assert isinstance(ckpt['rng_state']['numpy'][1], np.ndarray)
    hub = ckpt['message_hub']['log_scalars']
    assert hub['train/loss'].statistics('mean') > 0
    resumed = tiny_runner(str(tmp_path), max_iters=4, resume=True)
    with safe_checkpoint_loading(trust=False):
        resumed.train()
    assert resumed.iter == 4


def test_released_and_converted_layouts_load_safely(tmp_path, monkeypatch):
    """The layouts the converters document (detectron2 training dict, mmseg
    0.x runner dict, timm / official state dicts) and the converters'
    outputs load without the opt-in."""
    from test_converters.test_released_det import d2_detector_state
    from test_converters.test_seg_converter import _small_state, mmseg0_file
    layouts = {
        'd2.pth':
        dict(
            model=d2_detector_state(), trainer=dict(iteration=3), iteration=3),
        'mmseg0.pth':
        mmseg0_file(_small_state()),
        'official.pt':
        dict(module={'pos_embed': torch.zeros(1, 5, 8)}),
        'timm.pth': {
            'pos_embed': torch.zeros(1, 5, 8)
        },
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        assert load_checkpoint_file(str(tmp_path / name), trust=False)
    dst = str(tmp_path / 'converted.pth')
    code = _run_script(
        osp.join(ROOT, 'tools', 'model_converters', 'eva02_seg_to_mmapt.py'),
        [str(tmp_path / 'mmseg0.pth'), dst], monkeypatch)
    assert code == 0
    assert 'state_dict' in load_checkpoint_file(dst, trust=False)


# ----------------------------------------------------------- the opt-in
def test_opt_in_loads_a_legacy_pickle_and_warns_once(tmp_path, monkeypatch,
                                                     capsys):
    """A timm-style training checkpoint holding ``argparse.Namespace``:
    refused safely (naming the global), loaded with the opt-in (tool flag
    or environment variable), one warning line per process."""
    path = str(tmp_path / 'timm_train.pth')
    torch.save(
        dict(
            state_dict={'pos_embed': torch.zeros(1, 4, 8)},
            args=argparse.Namespace(lr=0.1)), path)
    with pytest.raises(UntrustedCheckpointError, match='argparse.Namespace'):
        load_checkpoint_file(path)
    monkeypatch.setattr(checkpoint_file, '_trust_warned', False)
    monkeypatch.setenv(TRUST_ENV, '1')
    assert load_checkpoint_file(path)['args'].lr == 0.1
    with safe_checkpoint_loading():
        assert CheckpointLoader.load_checkpoint(path)['args'].lr == 0.1
    err = capsys.readouterr().err
    assert err.count('weights_only=False') == 1 and path in err
    monkeypatch.setenv(TRUST_ENV, 'maybe')
    with pytest.raises(ValueError, match=TRUST_ENV):
        load_checkpoint_file(path)


def test_trust_flag_of_a_converter(tmp_path, monkeypatch, capsys):
    from test_converters.test_seg_converter import _small_state, mmseg0_file
    src, dst = str(tmp_path / 'src.pth'), str(tmp_path / 'dst.pth')
    ckpt = mmseg0_file(_small_state())
    ckpt['meta']['args'] = argparse.Namespace(seed=0)
    torch.save(ckpt, src)
    tool = osp.join(ROOT, 'tools', 'model_converters', 'eva02_seg_to_mmapt.py')
    assert _run_script(tool, [src, dst], monkeypatch) == 1
    assert 'argparse.Namespace' in capsys.readouterr().err
    monkeypatch.setattr(checkpoint_file, '_trust_warned', False)
    assert _run_script(tool, [src, dst, TRUST_FLAG], monkeypatch) == 0
    assert capsys.readouterr().err.count('weights_only=False') == 1
    assert os.path.isfile(dst)
