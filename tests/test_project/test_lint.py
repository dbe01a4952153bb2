"""`make lint` (flake8, isort --check-only, yapf --diff; settings in
setup.cfg) passes on the repository, as CI requires."""
import importlib.util
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # yapf reads every file: about a minute on 2 cores
def test_make_lint_passes():
    missing = [
        m for m in ('flake8', 'isort', 'yapf')
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        pytest.fail(f'{", ".join(missing)} not installed: `make setup` '
                    'installs them (requirements/tests.txt)')
    assert shutil.which('make'), 'make is needed for `make lint`'
    proc = subprocess.run(['make', 'lint', f'PY={sys.executable}'],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600)
    assert proc.returncode == 0, (
        'make lint failed; `make format` fixes what isort and yapf report, '
        f'flake8 findings need a hand:\n{proc.stdout[-4000:]}\n'
        f'{proc.stderr[-2000:]}')
