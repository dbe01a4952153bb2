"""Broken checkpoint files (issue 19): ``load_checkpoint_file`` and the
converters name the file, what is wrong with it and what to do, in one line
and without a torch traceback."""
import os.path as osp

import pytest
import torch
from conftest import run_tool

from mmapt.checkpoints.checkpoint_file import (CheckpointFileError,
                                               checkpoint_file_problem)
from mmapt.converters.eva02_convert import load_checkpoint_file

CONVERTERS = [
    ['tools/model_converters/eva02_to_mmapt.py'],
    ['tools/model_converters/eva02_det_to_mmapt.py'],
    ['tools/model_converters/eva02_seg_to_mmapt.py'],
    ['tools/model_converters/vit_to_mmapt.py'],
]


def _torch_file(path, size=64):
    torch.save({'blocks.0.w': torch.randn(size, size)}, str(path))
    return path


def _safetensors_file(path):
    safetensors = pytest.importorskip('safetensors.torch')
    safetensors.save_file({'w': torch.randn(32, 32)}, str(path))
    return path


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def _assert_names_file_and_fix(msg, path, what):
    assert str(path) in msg
    assert what in msg
    assert 'download' in msg  # what to do
    assert '\n' not in msg


def test_good_files_load(tmp_path):
    assert checkpoint_file_problem(str(_torch_file(tmp_path / 'a.pth'))) \
        is None
    assert set(load_checkpoint_file(str(tmp_path / 'a.pth'))) == \
        {'blocks.0.w'}
    path = _safetensors_file(tmp_path / 'a.safetensors')
    assert checkpoint_file_problem(str(path)) is None
    assert load_checkpoint_file(str(path))['w'].shape == (32, 32)


def test_truncated_torch_checkpoint(tmp_path):
    path = _truncate(_torch_file(tmp_path / 'cut.pth'))
    with pytest.raises(CheckpointFileError) as err:
        load_checkpoint_file(str(path))
    _assert_names_file_and_fix(str(err.value), path, 'truncated')


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
    assert isinstance(err.value, CheckpointFileError)
    assert 'nope.pth' in str(err.value) and 'not found' in str(err.value)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(CheckpointFileError) as err:
        load_checkpoint_file(str(empty))
    _assert_names_file_and_fix(str(err.value), empty, 'empty')
    with pytest.raises(CheckpointFileError, match='directory'):
        load_checkpoint_file(str(tmp_path))


def test_truncated_safetensors(tmp_path):
    path = _truncate(_safetensors_file(tmp_path / 'cut.safetensors'))
    with pytest.raises(CheckpointFileError) as err:
        load_checkpoint_file(str(path))
    _assert_names_file_and_fix(str(err.value), path, 'truncated')
    # Cut inside the header too.
    head = tmp_path / 'head.safetensors'
    head.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointFileError, match='truncated'):
        load_checkpoint_file(str(head))


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'page.pth'
    path.write_text('<html>404 Not Found</html>\n')
    with pytest.raises(CheckpointFileError) as err:
        load_checkpoint_file(str(path))
    _assert_names_file_and_fix(str(err.value), path, 'not a checkpoint')


@pytest.mark.parametrize('tool', CONVERTERS, ids=lambda t: osp.basename(t[0]))
def test_converters_report_a_truncated_file_in_one_line(tool, tmp_path):
    path = _truncate(_torch_file(tmp_path / 'cut.pth'))
    proc = run_tool(
        tool + [str(path), str(tmp_path / 'out.pth')],
        cwd=tmp_path,
        check=False,
        timeout=300)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert 'central directory' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith('error: ')
    _assert_names_file_and_fix(lines[0], path, 'truncated')
    assert not (tmp_path / 'out.pth').exists()
