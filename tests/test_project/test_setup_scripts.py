"""scripts/build_mmcv.sh picks the CUDA compiler the way docs/install.md
says: the first nvcc whose release equals torch's CUDA version, from a real
toolkit root (with the CUDA headers)."""
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    torch.version.cuda is None,
    reason='a CPU-only torch build has no CUDA version to match')


def fake_toolkit(root, release: str, headers: bool = True) -> str:
    """A folder with bin/nvcc printing ``release`` (and include/ headers)."""
    (root / 'bin').mkdir(parents=True)
    nvcc = root / 'bin' / 'nvcc'
    nvcc.write_text('#!/bin/sh\necho "Cuda compilation tools, release '
                    f'{release}, V{release}.1"\n')
    nvcc.chmod(0o755)
    if headers:
        (root / 'include').mkdir()
        (root / 'include' / 'cuda_runtime.h').write_text('')
    return str(root)


def print_cuda_home(cuda_home: str) -> subprocess.CompletedProcess:
    return subprocess.run([
        'bash',
        os.path.join(ROOT, 'scripts', 'build_mmcv.sh'), '--print-cuda-home',
        sys.executable
    ],
                          env=dict(os.environ, CUDA_HOME=cuda_home),
                          capture_output=True,
                          text=True,
                          timeout=60)


def test_cuda_home_of_torchs_cuda_version_is_taken(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda', torch.version.cuda)
    proc = print_cuda_home(home)
    assert proc.returncode == 0 and proc.stdout.strip() == home


@pytest.mark.parametrize('release, headers', [('9.9', True), (None, False)])
def test_wrong_version_or_no_headers_is_skipped(tmp_path, release, headers):
    home = fake_toolkit(tmp_path / 'cuda', release or torch.version.cuda,
                        headers)
    proc = print_cuda_home(home)
    # Either another toolkit of the machine or none at all, never this one.
    assert proc.stdout.strip() != home
    assert proc.returncode in (0, 1)
