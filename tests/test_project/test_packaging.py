"""Packaging: a wheel built from the repository carries the configs, tools
and model index in ``mmapt/.mim`` and the requirements (torch not pinned);
installed from it, ``mim train/test/run/search mmapt ...`` resolve the
packaged configs and tools, offline."""
import glob
import importlib.util
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT

TOY_CONFIG = 'toy_apt_det.py'


def _setup_module():
    spec = importlib.util.spec_from_file_location('mmapt_setup',
                                                  osp.join(ROOT, 'setup.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(cmd, cwd, env=None, check=True):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'{cmd} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


def test_install_requires_come_from_the_requirement_files():
    setup = _setup_module()
    requires = setup.parse_requirements(*setup.REQUIREMENT_FILES)
    names = {r.split('=')[0].split('<')[0].split('>')[0] for r in requires}
    assert {'mmengine', 'mmdet', 'mmsegmentation', 'timm'} <= names
    # torch, torchvision and mmcv must match the machine's CUDA: not here.
    assert not names & {'torch', 'torchvision', 'mmcv'}
    assert not any(r.startswith(('#', '-')) for r in requires)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """mmapt built as a wheel from a copy of the repository (no network, no
    build isolation) and installed into a folder of its own."""
    tmp = tmp_path_factory.mktemp('packaging')
    src = tmp / 'src'
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns('.git', '.venv', 'work_dirs', 'data',
                                      'outputs', '__pycache__', '.mim',
                                      'build', '*.egg-info'))
    _run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index',
        '--no-build-isolation',
        str(src), '-w',
        str(tmp / 'dist')
    ],
         cwd=tmp)
    wheel = glob.glob(str(tmp / 'dist' / 'mmapt-*.whl'))[0]
    site = tmp / 'site'
    _run([
        sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index',
        '--target',
        str(site), wheel
    ],
         cwd=tmp)
    # The installed copy first: its mmapt (with .mim) shadows any other.
    path = os.pathsep.join(
        p for p in (str(site), os.environ.get('PYTHONPATH')) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS='1')
    work = tmp / 'work'  # no data here: the tools must say so
    work.mkdir()
    return dict(
        wheel=wheel, site=str(site), env=env, cwd=str(work), src=str(src))


def test_wheel_carries_configs_tools_and_model_index(installed):
    with zipfile.ZipFile(installed['wheel']) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith('/METADATA'))
        requires = [
            line.split(': ', 1)[1]
            for line in wheel.read(metadata).decode().splitlines()
            if line.startswith('Requires-Dist: ')
        ]
    for path in ('configs/apt_vitdet_coco.py', 'configs/apt_upernet_ade20k.py',
                 'configs/_base_/models/cascade_mask_rcnn_vitdet.py',
                 'configs/toy/toy_apt_det.py', 'configs/vitdet/metafile.yml',
                 'tools/train.py', 'tools/test.py', 'tools/slurm_train.sh',
                 'tools/misc/print_config.py', 'model-index.yml'):
        assert f'mmapt/.mim/{path}' in names, path
    assert not any('__pycache__' in n for n in names)
    assert any(r.startswith('mmdet') for r in requires)
    assert not any(r.split()[0].startswith('torch') for r in requires)


def test_existing_environment_needs_nothing_but_mmapt(installed):
    """`pip install` into this OpenMMLab environment (torch, mmcv, mmdet,
    mmseg already there) resolves offline and installs mmapt alone: no
    requirement is missing and torch is left as it is."""
    import json
    proc = _run([
        sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index',
        '--no-build-isolation', '--quiet', '--report', '-', installed['src']
    ],
                cwd=installed['cwd'])
    report = json.loads(proc.stdout)
    names = [item['metadata']['name'] for item in report['install']]
    assert names == ['mmapt']


def _mim(installed, *args, check=False):
    if importlib.util.find_spec('mim') is None:
        pytest.fail('openmim is not installed: `make setup` installs it '
                    '(requirements/mim.txt)')
    return _run([sys.executable, '-m', 'mim', *args],
                cwd=installed['cwd'],
                env=installed['env'],
                check=check)


@pytest.mark.slow
def test_mim_train_runs_the_packaged_tool_on_the_packaged_config(installed):
    proc = _mim(installed, 'train', 'mmapt', TOY_CONFIG, '--work-dir', 'w')
    out = proc.stdout + proc.stderr
    mim_root = osp.join(installed['site'], 'mmapt', '.mim')
    # mim found the config by name and ran mmapt's train.py from .mim ...
    assert osp.join(mim_root, 'configs', 'toy', TOY_CONFIG) in out
    assert osp.join(mim_root, 'tools', 'train.py') in out
    # ... which stopped before training: there is no data set here.
    assert proc.returncode != 0
    assert 'Data set of config' in out and 'make_toy_coco.py' in out


def test_mim_test_passes_the_checkpoint_to_the_packaged_tool(installed):
    proc = _mim(installed, 'test', 'mmapt', TOY_CONFIG, '--checkpoint',
                'missing.pth')
    out = proc.stdout + proc.stderr
    assert osp.join(installed['site'], 'mmapt', '.mim', 'tools',
                    'test.py') in out
    assert proc.returncode != 0
    assert 'checkpoint missing.pth not found' in out


def test_mim_run_finds_a_packaged_script(installed):
    config = osp.join(installed['site'], 'mmapt', '.mim', 'configs', 'toy',
                      TOY_CONFIG)
    proc = _mim(installed, 'run', 'mmapt', 'print_config', config, check=True)
    assert "type='APTEVA02'" in proc.stdout
    assert 'thresholds=(' in proc.stdout


def _search_vitdet(installed, *fields):
    """`mim search mmapt --model apt-vitdet --field FIELDS`, wide."""
    return _mim(
        installed,
        'search',
        'mmapt',
        '--model',
        'apt-vitdet',
        '--field',
        *fields,
        '--display-width',
        '300',
        check=True)


def test_mim_search_lists_the_model_index(installed):
    proc = _mim(installed, 'search', 'mmapt', '--valid-field', check=True)
    assert 'batch_size' in proc.stdout.lower() or 'backbone' in (
        proc.stdout.lower())
    proc = _search_vitdet(installed, 'config')
    assert 'apt-eva02-b_vitdet-cascade-mask-rcnn_64xb2-60k_coco-1536' in (
        proc.stdout)
    assert 'configs/apt_vitdet_coco.py' in proc.stdout


def test_mim_search_shows_the_local_weights(installed):
    """`mim search mmapt --field weight` lists every model's `Weights`: the
    local paths where converted or trained checkpoints lie (nothing is
    downloaded)."""
    proc = _mim(installed, 'search', 'mmapt', check=True)
    assert 'apt-eva02-b_upernet_8xb4-60k_ade20k-512x512' in proc.stdout
    proc = _search_vitdet(installed, 'weight', 'weights_from')
    assert 'checkpoints/eva02_B_coco_sys_mmapt.pth' in proc.stdout
    assert 'work_dirs/apt_vitdet_coco/iter_60000.pth' in proc.stdout
    # mim lower-cases metadata values.
    assert 'converted (no download) from eva02_b_coco_sys.pth' in proc.stdout
