"""Bad input about models, thresholds and checkpoints (issue 19): each gets
one line naming the problem and the fix, before any slow work, and never a
silent wrong answer."""
import glob
import os
import os.path as osp
import warnings

import pytest
import torch
from conftest import ROOT, run_tool

from mmapt.models import APTEVA02, APTViT
from mmapt.models.apt.layout_record import CheckpointLayoutWarning

ARCH = dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=True)
VIT_ARCH = dict(embed_dims=32, num_layers=2, num_heads=1)
TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')


def _apt(**kwargs):
    return APTEVA02(arch=ARCH, img_size=128, patch_size=16, **kwargs)


def _no_warnings(fn):
    with warnings.catch_warnings():
        warnings.simplefilter('error', CheckpointLayoutWarning)
        return fn()


# ------------------------------------------------ thresholds vs patch sizes
def test_thresholds_shorter_than_patch_sizes_is_an_error():
    """``thresholds=[2, 2]`` on a 4-scale backbone used to drop the 128-px
    scale silently."""
    with pytest.raises(ValueError) as err:
        _apt(thresholds=(2, 2), patch_sizes=(16, 32, 64, 128))
    msg = str(err.value)
    assert '3 thresholds' in msg and 'got 2' in msg
    assert 'model.backbone.patch_sizes' in msg  # the fix names both knobs
    assert '\n' not in msg
    with pytest.raises(ValueError, match='1 threshold'):
        APTViT(
            arch=VIT_ARCH,
            img_size=112,
            patch_size=14,
            thresholds=(2, 2),
            patch_sizes=(14, 28))


def test_matching_patch_sizes_are_accepted_and_checked():
    model = _apt(thresholds=(2, 2, 0.3), patch_sizes=(16, 32, 64, 128))
    assert model.tokenizer.patch_sizes == (16, 32, 64, 128)
    with pytest.raises(ValueError, match='patch_size'):
        _apt(thresholds=(2, 2), patch_sizes=(14, 28, 56))
    # Without patch_sizes the thresholds alone decide (older configs).
    assert _apt(thresholds=(2, )).tokenizer.patch_sizes == (16, 32)


def _apt_configs():
    return sorted(
        glob.glob(osp.join(ROOT, 'configs', 'apt_*.py')) +
        glob.glob(osp.join(ROOT, 'configs', 'toy', 'toy_apt_*.py')))


@pytest.mark.parametrize(
    'path', _apt_configs(), ids=lambda p: osp.relpath(p, ROOT))
def test_every_apt_config_states_its_patch_sizes(path):
    from mmengine.config import Config
    backbone = Config.fromfile(path).model.backbone
    sizes = tuple(backbone.patch_sizes)
    assert len(sizes) == len(backbone.thresholds) + 1
    base = backbone.get('patch_size', sizes[0])
    assert sizes == tuple(base * 2**i for i in range(len(sizes)))


def test_train_tool_rejects_short_thresholds_before_building(tmp_path):
    """One line, no traceback, no model built (no data needed either)."""
    proc = run_tool([
        'tools/train.py', TOY_DET, '--work-dir',
        str(tmp_path / 'w'), '--cfg-options', 'model.backbone.thresholds=[2,2]'
    ],
                    cwd=tmp_path,
                    check=False,
                    timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert 'thresholds' in lines[0] and '(16, 32, 64, 128)' in lines[0]
    assert 'toy_apt_det.py' in lines[0]


# ------------------------------------------------------ negative thresholds
@pytest.mark.parametrize('thresholds', [(-0.5, 2, 0.3), (2, -2, 0.3),
                                        (2, 2, float('-inf'))])
def test_negative_threshold_other_than_minus_one_is_an_error(thresholds):
    with pytest.raises(ValueError) as err:
        _apt(thresholds=thresholds)
    msg = str(err.value)
    assert 'negative' in msg and '-1' in msg and '>= 0' in msg


def test_minus_one_still_disables_a_scale():
    model = _apt(thresholds=(-1, 2, -1.0))
    assert model.tokenizer.thresholds == (-1.0, 2.0, -1.0)


def test_tokenizer_rejects_negative_thresholds_too():
    from mmapt.tokenizer import PatchTokenizer
    with pytest.raises(ValueError, match='negative'):
        PatchTokenizer(thresholds=(-0.01, ))


# --------------------------------------------- checkpoint layout at load
def test_state_dict_records_patch_sizes():
    model = _apt(thresholds=(2, 2, 0.3))
    state = model.state_dict()
    assert state['apt_embed.patch_sizes'].tolist() == [16, 32, 64, 128]
    # It loads back into the same layout strictly and silently.
    same_layout = _apt(thresholds=(1, 1, 1))
    _no_warnings(lambda: same_layout.load_state_dict(state, strict=True))


def test_checkpoint_with_other_scale_count_warns_at_load():
    state = _apt(thresholds=(2, 2, 0.3)).state_dict()
    model = _apt(thresholds=(2, 2), patch_sizes=(16, 32, 64))
    with pytest.warns(CheckpointLayoutWarning) as record:
        result = model.load_state_dict(state, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    msg = str(record[0].message)
    assert '(16, 32, 64, 128)' in msg and '(16, 32, 64)' in msg
    assert 'model.backbone.patch_sizes' in msg


def test_mmengine_load_checkpoint_warns_on_scale_mismatch(tmp_path):
    """The path of ``load_from``, ``tools/test.py`` and ``init_cfg``:
    mmengine's loader, a runner-style checkpoint with a ``backbone.``
    prefix."""
    from mmengine.runner.checkpoint import (get_state_dict, load_checkpoint,
                                            save_checkpoint, weights_to_cpu)
    path = str(tmp_path / 'ckpt.pth')
    wrapper = torch.nn.Module()
    wrapper.backbone = _apt(thresholds=(2, 2, 0.3))
    # What the Runner writes: weights_to_cpu(get_state_dict(model)) + meta.
    state = weights_to_cpu(get_state_dict(wrapper))
    assert state['backbone.apt_embed.patch_sizes'].tolist() == [
        16, 32, 64, 128
    ]
    save_checkpoint(dict(state_dict=state, meta=dict(cfg='x')), path)
    other = torch.nn.Module()
    other.backbone = _apt(thresholds=(5.75, ))
    with pytest.warns(CheckpointLayoutWarning, match=r'\(16, 32\)'):
        load_checkpoint(other, path, map_location='cpu')


def test_checkpoint_without_layout_record_still_loads():
    """Checkpoints written before the record existed (or converted plain
    ones) load, strictly, with at most a warning."""
    model = _apt(thresholds=(2, 2, 0.3))
    state = model.state_dict()
    del state['apt_embed.patch_sizes']
    target = _apt(thresholds=(2, 2, 0.3))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        target.load_state_dict(state, strict=True)
    layout = [w for w in record if w.category is CheckpointLayoutWarning]
    assert len(layout) <= 1
    assert torch.equal(target.apt_embed.aggregate.weight,
                       model.apt_embed.aggregate.weight)
    # A plain EVA02 checkpoint: only the APT weights are missing.
    from mmapt.models import EVA02
    plain = EVA02(arch=ARCH, img_size=128, patch_size=16)
    result = _no_warnings(
        lambda: target.load_state_dict(plain.state_dict(), strict=False))
    assert sorted(result.missing_keys) == [
        'apt_embed.aggregate.bias', 'apt_embed.aggregate.weight',
        'apt_embed.zero_linear.bias', 'apt_embed.zero_linear.weight'
    ]


# ------------------------------------------- train / test tool preflight
def test_train_tool_wrong_config_path(tmp_path):
    proc = run_tool(['tools/train.py', 'configs/no_such_config.py'],
                    cwd=tmp_path,
                    check=False,
                    timeout=300)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert 'no_such_config.py' in proc.stderr
    assert 'configs/' in proc.stderr


def test_preflight_checks_without_tools(tmp_path):
    """The cheap checks themselves: config path, output folder, checkpoint
    file, resume path."""
    from mmengine.config import Config

    from mmapt.engine import preflight
    with pytest.raises(FileNotFoundError, match='not found'):
        preflight.check_config_path(str(tmp_path / 'x.py'))
    (tmp_path / 'cfg.txt').write_text('a = 1')
    with pytest.raises(ValueError, match='.py'):
        preflight.check_config_path(str(tmp_path / 'cfg.txt'))

    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(PermissionError, match='work dir'):
        preflight.check_writable_dir(str(blocker / 'sub'), 'work dir')
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / 'locked'
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match='--out'):
                preflight.check_writable_dir(str(locked / 'out'), '--out')
        finally:
            locked.chmod(0o700)
    preflight.check_writable_dir(str(tmp_path / 'new' / 'dir'), 'work dir')
    assert not (tmp_path / 'new').exists()  # checking creates nothing

    with pytest.raises(FileNotFoundError, match='checkpoint'):
        preflight.check_checkpoint_path(
            str(tmp_path / 'missing.pth'), 'checkpoint')
    (tmp_path / 'empty.pth').write_bytes(b'')
    with pytest.raises(ValueError, match='empty'):
        preflight.check_checkpoint_path(
            str(tmp_path / 'empty.pth'), 'checkpoint')

    cfg = Config(dict(resume=True, load_from=str(tmp_path / 'gone.pth')))
    with pytest.raises(FileNotFoundError, match='resume'):
        preflight.check_checkpoints(cfg, 'c.py', check_init=False)
    cut = tmp_path / 'cut.pth'
    torch.save({'w': torch.zeros(64, 64)}, str(cut))
    cut.write_bytes(cut.read_bytes()[:2000])
    cfg = Config(dict(load_from=str(cut)))
    with pytest.raises(ValueError, match='load_from .*truncated'):
        preflight.check_checkpoints(cfg, 'c.py', check_init=False)
    init = dict(type='Pretrained', checkpoint=str(cut))
    cfg = Config(dict(model=dict(backbone=dict(init_cfg=init))))
    with pytest.raises(ValueError, match='init_cfg.*truncated'):
        preflight.check_checkpoints(cfg, 'c.py', check_init=True)


def test_test_tool_missing_checkpoint_is_one_line(tmp_path):
    proc = run_tool(['tools/test.py', TOY_DET,
                     str(tmp_path / 'missing.pth')],
                    cwd=tmp_path,
                    check=False,
                    timeout=300)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'missing.pth' in lines[0]


def test_test_tool_unwritable_work_dir(tmp_path):
    ckpt = tmp_path / 'ok.pth'
    torch.save({'state_dict': {}}, str(ckpt))
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    proc = run_tool([
        'tools/test.py', TOY_DET,
        str(ckpt), '--work-dir',
        str(blocker / 'work')
    ],
                    cwd=tmp_path,
                    check=False,
                    timeout=300)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    assert 'work dir' in proc.stderr and 'blocker' in proc.stderr


# --------------------------------------------------------- torch.compile
def test_compile_with_dynamic_apt_backbone_warns_once(capsys):
    from mmengine.config import Config

    from mmapt.engine.preflight import warn_compile
    cfg = Config.fromfile(TOY_DET)
    assert warn_compile(cfg) is None  # compile not asked for
    cfg.compile = True
    msg = warn_compile(cfg)
    assert msg and 'torch.compile' in msg and 'pack_size' in msg
    assert 'docs/' in msg and '\n' not in msg
    cfg.model.backbone.pack_size = 4096  # the static-shape mode
    assert warn_compile(cfg) is None
    plain = Config.fromfile(
        osp.join(ROOT, 'configs', 'toy', 'toy_eva02_det.py'))
    plain.compile = dict(backend='inductor')
    assert warn_compile(plain) is None
