"""tools/analysis/gpu_benchmark.py on CPU (--quick), and the import
contract it relies on: the backbones import without mmcv, mmdet or mmseg."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_tool
from PIL import Image

#: Every arm of the script: each must end up timed or listed with a reason.
ALL_ARMS = {
    'plain_square', 'plain_window', 'plain_square_graph', 'plain_window_graph',
    'plain_square_compiled', 'apt_square', 'apt_nopad', 'apt_nomerge',
    'apt_static', 'apt_static_graph', 'apt_square_padded'
}
EAGER = {
    'plain_square', 'plain_window', 'apt_square', 'apt_nopad', 'apt_nomerge',
    'apt_static'
}


def _accounted(arch: dict) -> dict:
    """Arm -> where it is recorded; fails on an arm recorded twice."""
    where = {}
    for kind in ('arms', 'skipped', 'failed', 'cut'):
        for arm in arch[kind]:
            if arm in ALL_ARMS:
                assert arm not in where, (arm, kind, where[arm])
                where[arm] = kind
    return where


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.default_rng(0)
    # A 3:2 photo-like image (flat sky over texture) as .npy and a 1:2
    # noisy one as .png: both loaders, non-square contents.
    wide = np.full((200, 300, 3), 90, np.uint8)
    wide[100:] = rng.integers(0, 255, (100, 300, 3), dtype=np.uint8)
    np.save(folder / 'a_wide.npy', wide)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3),
                                 dtype=np.uint8)).save(folder / 'b_noise.png')
    return folder


def test_backbones_import_without_openmmlab_packages():
    # ``sys.modules[name] = None`` makes ``import name`` raise ImportError,
    # as on a GPU machine that has torch, timm and mmengine only.
    code = ('import sys\n'
            'for name in ("mmcv", "mmdet", "mmseg"):\n'
            '    sys.modules[name] = None\n'
            'import mmapt.models.backbones as b\n'
            'from mmapt.apis import image_folder, images, views\n'
            'from mmapt.benchmark import analysis, memory, timing\n'
            'print(b.APTEVA02.__name__, b.EVA02.__name__)\n')
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['APTEVA02', 'EVA02']


def test_quick_cpu_run_writes_json(tmp_path, images):
    out = tmp_path / 'gpu.json'
    proc = run_tool([
        'tools/analysis/gpu_benchmark.py', '--device', 'cpu', '--quick',
        '--dtype', 'bf16', '--images',
        str(images), '--out',
        str(out)
    ],
                    timeout=600)
    report = json.loads(out.read_text())
    assert report['environment']['torch']
    assert report['settings']['images'][0]['window_view'] == [256, 256]
    assert report['settings']['images'][0]['content'] == [171, 256]
    assert report['settings']['images'][0]['nopad_view'] == [256, 256]
    assert report['settings']['images'][1]['nopad_view'] == [128, 256]
    arch = report['archs']['quick']
    assert arch['status'] == 'done' and 'interrupted' not in report
    # Every arm accounted for: the eager ones (static mode included) timed;
    # no varlen kernel, CUDA graphs or compiled arm on CPU: skipped, and
    # each says why.
    where = _accounted(arch)
    assert set(where) == ALL_ARMS
    assert set(arch['arms']) == EAGER
    assert arch['failed'] == {} and arch['cut'] == {}
    for arm in ('plain_square_graph', 'plain_window_graph', 'apt_static_graph',
                'plain_square_compiled'):
        assert 'CUDA' in arch['skipped'][arm]
    assert 'varlen' in arch['skipped']['apt_square_padded']
    # What each arm ran, counted: the plain model no packed attention, APT
    # the padded plan (no varlen kernel off CUDA); peak memory is not
    # measured off CUDA and says so (None, never 0).
    assert arch['attention_path'] == 'padded SDPA plan'
    for name, info in arch['arm_info'].items():
        kernel = info['attention']['kernel']
        expected = 'static_sdpa' if name == 'apt_static' else 'padded'
        assert kernel == ('none' if name.startswith('plain') else expected)
        assert info['attention']['varlen_failed'] == 0
        assert info['peak_mib'] is None
        assert arch['arms'][name]['attention_kernel'] == kernel
    assert arch['repeats_done'] == 2
    arms = arch['arms']
    # 256 canvas = 16 x 16 cells; the wide image's content (171 px high)
    # padded to the 128-px window is 256 x 256 (no saving); the noise image
    # becomes 128 x 256 content = 8 x 16 cells.
    assert arms['plain_square']['tokens'] == 2 * 256
    assert arms['plain_window']['tokens'] == 256 + 128
    # APT merges the flat sky and the padding, never splits a cell; without
    # the padding it has fewer tokens still.
    assert 0 < arms['apt_square']['tokens'] < 2 * 256
    assert 0 < arms['apt_nopad']['tokens'] < arms['apt_square']['tokens']
    assert arms['apt_square']['keep_ratio'] == round(
        arms['apt_square']['tokens'] / 512, 4)
    for arm in arms.values():
        for entry in arm['per_image'].values():
            assert len(entry['times_ms']) == 2
            assert all(t > 0 for t in entry['times_ms'])
        assert arm['img_s'] > 0
    summary = arch['summary']
    assert summary['token_ratio'] == round(512 / arms['apt_square']['tokens'],
                                           4)
    assert summary['varlen_speedup_vs_padded'] is None
    assert summary['fastest_plain'] in ('plain_square', 'plain_window')
    assert arms['apt_nomerge']['tokens'] == 2 * 256
    # APT with nothing merged is the plain model (bf16 autocast both).
    check = arch['checks']['apt_nomerge_vs_plain_square']
    assert check['rel_l2_diff'] < 1e-2
    # Padded to its bucket, the outputs are the unpadded ones.
    assert arch['checks']['apt_static_vs_apt_square']['rel_l2_diff'] < 1e-2
    # Stage split of APT's forward: every stage timed, the tokenizer a part.
    stages = arch['stages']['apt_square']
    assert set(stages['stages_ms']) == {
        'tokenizer', 'embedding', 'context', 'blocks', 'unpack'
    }
    assert 0 < stages['tokenizer_share'] < stages['outside_blocks_share'] < 1
    # Overhead counts of one forward: the plain model never syncs.
    counts = arch['overhead']
    assert counts['plain']['total_syncs'] == 0
    assert counts['apt']['ops']['tokenizer'] > 0
    assert counts['apt_static']['ops']['blocks'] > 0
    # The profile (first architecture) has a row per APT stage.
    assert set(
        arch['profile']['apt_square']['stages']) >= {'tokenizer', 'blocks'}
    # Training: forward + backward of every training arm, once per image.
    training = arch['training']
    assert set(training['arms']) == {
        'plain_square', 'plain_window', 'apt_square', 'apt_nopad'
    }
    assert all(
        len(e['times_ms']) == 1 for a in training['arms'].values()
        for e in a['per_image'].values())
    assert training['summary']['speedup_vs_plain_square'] > 0
    assert 'speed-up vs plain square' in proc.stdout
    assert 'skipped plain_square_graph' in proc.stdout
    # The Markdown summary next to the JSON.
    markdown = (tmp_path / 'gpu.md').read_text()
    assert '| apt_nopad |' in markdown and 'Training step' in markdown
    assert '### Profile: one apt_square forward' in markdown
    assert '| padded | not measured |' in markdown


def test_budget_spent_cuts_arms_and_parts_but_writes_all(tmp_path, images):
    """--budget-s 0: apt_square (the buckets need its tokens) is timed for
    one repeat; every later arm, the profile and training are cut, each
    with the reason, and the report is whole."""
    out = tmp_path / 'gpu.json'
    run_tool([
        'tools/analysis/gpu_benchmark.py', '--device', 'cpu', '--quick',
        '--budget-s', '0', '--images',
        str(images), '--out',
        str(out)
    ],
             timeout=600)
    arch = json.loads(out.read_text())['archs']['quick']
    assert set(_accounted(arch)) == ALL_ARMS
    assert set(arch['arms']) == {'apt_square'}
    assert arch['repeats_done'] == 1
    assert arch['timing_cut'] == 'cut by the time budget after 1 of 2 repeats'
    for arm in EAGER - {'apt_square'}:
        assert 'time budget (0 s) before its warm-up' in arch['cut'][arm]
    for part in ('profile', 'training'):
        assert 'over the time budget' in arch['cut'][part]
    assert arch['status'] == 'done'
    assert '**cut** `apt_static`' in (tmp_path / 'gpu.md').read_text()


def test_sigint_mid_run_leaves_a_valid_report(tmp_path, images):
    """A SIGINT (gpu_benchmark.sh's time limit) while timing: the JSON
    holds the repeats done so far, and everything not reached is cut."""
    out = tmp_path / 'gpu.json'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.Popen([
        sys.executable,
        os.path.join(ROOT, 'tools/analysis/gpu_benchmark.py'), '--device',
        'cpu', '--quick', '--repeat', '5000', '--images',
        str(images), '--out',
        str(out)
    ],
                            cwd=ROOT,
                            env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if out.exists():
                arch = json.loads(out.read_text())['archs'].get('quick', {})
                if arch.get('repeats_done', 0) >= 1:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError('no timed repeat written in 300 s')
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert 'stopped; wrote' in stderr
    report = json.loads(out.read_text())
    assert report['interrupted'] == 'the run was stopped (SIGINT)'
    arch = report['archs']['quick']
    assert arch['status'].startswith('stopped (at: timed ')
    assert set(_accounted(arch)) == ALL_ARMS
    # The arms timed so far keep their repeats; none was lost.
    assert set(arch['arms']) == EAGER
    done = arch['repeats_done']
    assert 1 <= done < 5000
    for arm in arch['arms'].values():
        for entry in arm['per_image'].values():
            assert len(entry['times_ms']) >= done
    for part in ('profile', 'training'):
        assert 'stopped (SIGINT)' in arch['cut'][part]
    assert 'stopped early' in stdout
    assert '**Stopped early**' in (tmp_path / 'gpu.md').read_text()


def test_shell_help_prints_usage_and_runs_nothing(tmp_path):
    proc = subprocess.run([
        'bash',
        os.path.join(ROOT, 'tools/analysis/gpu_benchmark.sh'), '--help'
    ],
                          cwd=tmp_path,
                          capture_output=True,
                          text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert 'gpu_benchmark.sh [OUT]' in proc.stdout
    assert 'GPU_BENCH_TIMEOUT' in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no run, no output


def test_shell_time_limit_exits_3_and_says_so(tmp_path, images):
    """GPU_BENCH_TIMEOUT=1 stops the run (here while its modules load):
    timeout's 124 would read as the device tool's own time-out, so the
    script exits 3 and says what it kept. The tool acts on a stop that
    comes while it loads once the loading is done (see the next test), so
    the kill-after must outlast the loading: up to 20 s was seen on this
    2-core machine under load, against 1-2 s when idle."""
    proc = run_tool([
        'tools/analysis/gpu_benchmark.sh',
        str(tmp_path / 'out'), '--quick', '--device', 'cpu', '--images',
        str(images)
    ],
                    check=False,
                    timeout=150,
                    env=dict(
                        PYTHON=sys.executable,
                        GPU_BENCH_TIMEOUT='1',
                        GPU_BENCH_KILL_AFTER='60'))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert 'stopped at the 1-s limit; nothing was written yet' in proc.stderr
    assert 'stopped (SIGINT) while loading its modules' in proc.stderr


# Imported by Python at start-up (sitecustomize): one SIGINT to the
# process the first time anything looks for gmpy2 (mpmath's import, which
# sympy's brings in), i.e. where timeout's SIGINT lands now and then on a
# loaded machine; mpmath's bare ``except: pass`` swallows the
# KeyboardInterrupt.
SIGINT_AT_GMPY2 = """
import os, signal, sys, time

class SigintAtGmpy2:
    def find_spec(self, name, path=None, target=None):
        mark = os.environ['SIGINT_MARK']
        if name == 'gmpy2' and not os.path.exists(mark):
            open(mark, 'w').close()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        return None

sys.meta_path.insert(0, SigintAtGmpy2())
"""


def test_sigint_swallowed_by_an_import_still_stops_the_tool(tmp_path, images):
    """The cause of the flaky time-limit test: a SIGINT landing inside
    mpmath's import (torch -> sympy -> mpmath) was swallowed, and the run
    went on to the end (exit 3 with 'holds what was done') or past the
    kill-after (exit 4). The tool now holds a SIGINT while its modules
    load and stops after them, before running anything."""
    hook = tmp_path / 'hook'
    hook.mkdir()
    (hook / 'sitecustomize.py').write_text(SIGINT_AT_GMPY2)
    mark = tmp_path / 'sigint_sent'
    out = tmp_path / 'out.json'
    proc = run_tool([
        'tools/analysis/gpu_benchmark.py', '--quick', '--device', 'cpu',
        '--images',
        str(images), '--out',
        str(out)
    ],
                    check=False,
                    timeout=300,
                    env=dict(
                        PYTHONPATH=f'{hook}{os.pathsep}{ROOT}',
                        SIGINT_MARK=str(mark)))
    assert mark.exists(), 'nothing looked for gmpy2: the hook never fired'
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'stopped (SIGINT) while loading its modules; nothing was run' \
        in proc.stderr
    assert not out.exists()
