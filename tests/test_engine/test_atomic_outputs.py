"""Files never torn or left behind; broken checkpoints found before the
model is built.

* the converters check the output folder before converting and write
  through a temporary file: a full disk leaves nothing under the output
  name (an older file keeps its content) and no temporary file;
* SafeCheckpointHook removes its temporary file when a save fails;
* ``--resume`` without a path falls back from a deleted or truncated
  ``last_checkpoint`` to the newest intact checkpoint, or stops in one line
  before the model is built;
* the demo checks that a checkpoint loads before building the model.
"""
import errno
import os
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT
from fixtures.tiny_runner import tiny_runner
from mmengine.fileio import LocalBackend

from mmapt.engine.checkpoint_checks import resolve_auto_resume
from mmapt.engine.preflight import BadInputError

TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
SEG_CONVERTER = osp.join(ROOT, 'tools', 'model_converters',
                         'eva02_seg_to_mmapt.py')


def _run_script(path, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [path, *argv])
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as err:
        return err.code
    return 0


def _hidden(folder):
    return [name for name in os.listdir(folder) if name.startswith('.')]


@pytest.fixture
def seg_source(tmp_path):
    from test_converters.test_seg_converter import _small_state, mmseg0_file
    path = str(tmp_path / 'released.pth')
    torch.save(mmseg0_file(_small_state()), path)
    return path


# ------------------------------------------------------------ converters
def test_full_disk_leaves_no_torn_output(seg_source, tmp_path, monkeypatch,
                                         capsys):
    out = tmp_path / 'out'
    out.mkdir()
    dst = out / 'converted.pth'
    dst.write_bytes(b'the previous conversion')
    save = torch.save

    def half_then_enospc(obj, path, *args, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'PK\x03\x04 half a checkpoint')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, 'save', half_then_enospc)
    code = _run_script(SEG_CONVERTER, [seg_source, str(dst)], monkeypatch)
    monkeypatch.setattr(torch, 'save', save)
    err = capsys.readouterr().err
    assert code == 1 and 'No space left on device' in err
    assert str(dst) in err and 'Traceback' not in err
    assert dst.read_bytes() == b'the previous conversion'
    assert _hidden(out) == []


def test_output_folder_is_checked_before_converting(tmp_path, monkeypatch,
                                                    capsys):
    """The source does not even exist: the output problem is found first.
    (Tests run as root, which may write anywhere: a folder without write
    permission is simulated through os.access.)"""
    missing_src = str(tmp_path / 'not_downloaded_yet.pth')
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    locked = tmp_path / 'locked'
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(
        os, 'access', lambda path, mode: False
        if str(path) == str(locked) else access(path, mode))
    for dst, problem in ((a_file / 'x.pth', 'is a file, not a folder'),
                         (locked / 'x.pth',
                          'no write permission'), (locked, 'is a folder')):
        code = _run_script(SEG_CONVERTER, [missing_src, str(dst)], monkeypatch)
        err = capsys.readouterr().err
        assert code == 1 and problem in err, err
        assert 'not_downloaded_yet' not in err


# ---------------------------------------------------- SafeCheckpointHook
def test_failed_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    """The second save fails half-way (a full disk): the error propagates,
    no ``.iter_4.pth.tmp`` is left, and last_checkpoint still names the
    complete first checkpoint, which resumes."""
    put = LocalBackend.put
    calls = []

    def enospc_on_second_checkpoint(self, obj, filepath):
        if str(filepath).endswith('.tmp'):
            calls.append(filepath)
            if len(calls) == 2:
                with open(filepath, 'wb') as f:
                    f.write(obj[:len(obj) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', enospc_on_second_checkpoint)
    with pytest.raises(OSError, match='No space left'):
        tiny_runner(str(tmp_path), max_iters=4).train()
    assert len(calls) == 2
    assert _hidden(tmp_path) == []
    assert sorted(p.name
                  for p in tmp_path.glob('iter_*.pth')) == ['iter_2.pth']
    assert resolve_auto_resume(str(tmp_path)).endswith('iter_2.pth')


# ------------------------------------------------------------- --resume
@pytest.fixture
def work_dir(tmp_path):
    """Two Runner checkpoints, last_checkpoint naming the second."""
    tiny_runner(str(tmp_path), max_iters=4).train()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_4.pth')
    return tmp_path


def test_intact_last_checkpoint_is_used(work_dir):
    assert resolve_auto_resume(str(work_dir)) == str(work_dir / 'iter_4.pth')


@pytest.fixture
def warnings_logged():
    """Messages logged at WARNING by mmengine's current logger."""
    import logging

    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.mark.parametrize('damage', ['deleted', 'truncated', 'empty'])
def test_broken_last_checkpoint_falls_back_with_a_warning(
        work_dir, damage, warnings_logged):
    latest = work_dir / 'iter_4.pth'
    if damage == 'deleted':
        latest.unlink()
    else:
        data = latest.read_bytes()
        latest.write_bytes(data[:len(data) //
                                2] if damage == 'truncated' else b'')
    stale = work_dir / '.iter_6.pth.tmp'  # a killed save's leftover
    stale.write_bytes(b'x' * 1024)
    resumed = resolve_auto_resume(str(work_dir))
    assert resumed == str(work_dir / 'iter_2.pth')
    assert len(warnings_logged) == 1
    assert 'newest intact checkpoint' in warnings_logged[0]
    assert 'iter_4.pth' in warnings_logged[0]
    assert not stale.exists()


def test_no_intact_checkpoint_stops_before_the_model_is_built(
        work_dir, monkeypatch, capsys):
    for path in work_dir.glob('iter_*.pth'):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BadInputError, match='no other intact checkpoint'):
        resolve_auto_resume(str(work_dir))
    # tools/train.py: one line, exit 2, before any data or model is read.
    code = _run_script(
        osp.join(ROOT, 'tools', 'train.py'),
        [TOY_DET, '--work-dir',
         str(work_dir), '--resume'], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and 'Traceback' not in err
    assert 'train without --resume' in err.strip().splitlines()[-1]


def test_without_last_checkpoint_mmengine_starts_anew(tmp_path):
    assert resolve_auto_resume(str(tmp_path)) is None


# ------------------------------------------------------------------ demo
@pytest.mark.parametrize('damage', ['empty', 'truncated'])
def test_demo_checks_the_checkpoint_loads(damage, work_dir, tmp_path,
                                          monkeypatch):
    image = str(tmp_path / 'img.png')
    cv2.imwrite(image, np.full((64, 96, 3), 128, np.uint8))
    ckpt = work_dir / 'iter_2.pth'
    ckpt.write_bytes(b'' if damage == 'empty' else ckpt.read_bytes()[:300])
    code = _run_script(
        osp.join(ROOT, 'demo', 'image_demo.py'),
        [image, TOY_DET, str(ckpt), '--device', 'cpu'], monkeypatch)
    assert isinstance(code, str) and code.startswith('error: checkpoint')
    assert str(ckpt) in code and damage in code and '\n' not in code
