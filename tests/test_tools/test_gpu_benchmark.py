"""tools/analysis/gpu_benchmark.py on CPU (--quick), and the import
contract it relies on: the backbones import without mmcv, mmdet or mmseg."""
import json
import subprocess
import sys

import numpy as np
from conftest import ROOT, run_tool
from PIL import Image


def test_backbones_import_without_openmmlab_packages():
    # ``sys.modules[name] = None`` makes ``import name`` raise ImportError,
    # as on a GPU machine that has torch, timm and mmengine only.
    code = ('import sys\n'
            'for name in ("mmcv", "mmdet", "mmseg"):\n'
            '    sys.modules[name] = None\n'
            'import mmapt.models.backbones as b\n'
            'from mmapt.tokenizer import prepare\n'
            'from mmapt.utils import analysis, memory, timing\n'
            'print(b.APTEVA02.__name__, b.EVA02.__name__)\n')
    proc = subprocess.run([sys.executable, '-c', code],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['APTEVA02', 'EVA02']


def test_quick_cpu_run_writes_json(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    # A 3:2 photo-like image (flat sky over texture) as .npy and a 1:2
    # noisy one as .png: both loaders, non-square contents.
    wide = np.full((200, 300, 3), 90, np.uint8)
    wide[100:] = rng.integers(0, 255, (100, 300, 3), dtype=np.uint8)
    np.save(images / 'a_wide.npy', wide)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3),
                                 dtype=np.uint8)).save(images / 'b_noise.png')
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
    # No varlen kernel, CUDA graphs or compiled arm on CPU: those arms are
    # left out and say why; the static arm runs where the build has it.
    eager = {
        'plain_square', 'plain_window', 'apt_square', 'apt_nopad',
        'apt_nomerge'
    }
    static = 'apt_static' in arch['arms']
    assert set(arch['arms']) == eager | ({'apt_static'} if static else set())
    assert arch['failed'] == {}
    for arm in ('plain_square_graph', 'plain_window_graph', 'apt_static_graph',
                'plain_square_compiled'):
        assert 'CUDA' in arch['skipped'][arm]
    if not static:
        assert 'not available in this build' in arch['skipped']['apt_static']
    assert 'varlen' in arch['skipped']['apt_square_padded']
    assert 'cpu' in arch['attention_path']
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
    if static:  # padded to its bucket, the outputs are the unpadded ones
        assert arch['checks']['apt_static_vs_apt_square']['rel_l2_diff'] < \
            1e-2
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
