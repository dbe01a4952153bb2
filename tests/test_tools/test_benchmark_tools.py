"""tools/analysis/benchmark.py and get_flops.py on the toy configs (EVA-02
tiny at 256, generated photo-like images; a few seconds each)."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
from conftest import ROOT, run_tool
from PIL import Image

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

TOY_DET = ('configs/toy/toy_apt_det.py', 'configs/toy/toy_eva02_det.py')
TOY_SEG = ('configs/toy/toy_apt_seg.py', 'configs/toy/toy_eva02_seg.py')


def load_tool(name):
    path = osp.join(ROOT, 'tools', 'analysis', name)
    spec = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Two non-square photo-like images: a flat sky over texture."""
    folder = tmp_path_factory.mktemp('bench_images')
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(160, 240), (300, 200)]):
        img = np.full((h, w, 3), 150, np.uint8)
        img[h // 2:] = rng.integers(0, 255, (h - h // 2, w, 3), np.uint8)
        Image.fromarray(img).save(folder / f'img{i}.png')
    return folder


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_detection_benchmark_arms_and_json(images):
    proc = run_tool([
        'tools/analysis/benchmark.py', TOY_DET[0], '--compare', TOY_DET[1],
        '--images',
        str(images), '--num-images', '2', '--repeat', '2', '--warmup', '0',
        '--baseline-pad', 'window', '--padding-free', '--json'
    ],
                    timeout=600)
    out = last_json(proc)
    for key in ('baseline_img_s', 'apt_img_s', 'speedup', 'backbone_speedup',
                'token_ratio', 'speedup_vs_window', 'nopad_speedup_vs_window'):
        assert out[key] > 0, key
    arms = out['arms']
    assert set(arms) == {'baseline', 'baseline_window', 'apt', 'apt_nopad'}
    # Long side to 256 on a 256 canvas: 256 cells each on the square; the
    # window view (128-px windows) of 256 x 171 and 171 x 256 content is
    # 256 x 256 too, the padding-free view (128 px) as well here.
    assert arms['baseline']['tokens'] == 2 * 256
    assert arms['baseline_window']['tokens'] == 2 * 256
    assert arms['apt']['tokens'] < 2 * 256  # flat sky and padding merge
    assert out['token_ratio'] == pytest.approx(
        512 / arms['apt']['tokens'], abs=1e-3)
    for arm in arms.values():
        total = arm['total_ms']
        assert total['model_ms'] > 0 and total['backbone_ms'] > 0
        assert total['heads_ms'] > 0 and total['neck_ms'] > 0
        # The split adds up: preprocess + backbone + neck + heads = model.
        parts = (
            total['preprocess_ms'] + total['backbone_ms'] + total['neck_ms'] +
            total['heads_ms'])
        assert parts == pytest.approx(total['model_ms'], rel=1e-3)
        assert all(len(v['times_ms']) == 2 for v in arm['per_image'].values())
    apt = arms['apt']['total_ms']
    for stage in ('tokenizer', 'embedding', 'context', 'blocks', 'unpack'):
        assert apt[f'{stage}_ms'] > 0, stage
    assert 'tokenizer_ms' not in arms['baseline']['total_ms']


def test_segmentation_slide_benchmark_counts_every_crop(images):
    proc = run_tool([
        'tools/analysis/benchmark.py', TOY_SEG[0], '--compare', TOY_SEG[1],
        '--images',
        str(images), '--num-images', '1', '--repeat', '1', '--warmup', '0',
        '--json'
    ],
                    timeout=600)
    out = last_json(proc)
    # img0 (160 x 240) resized to short side 256 -> 256 x 384: two 256-px
    # crops at stride 171, 256 tokens each (16-px patches).
    assert out['arms']['baseline']['tokens'] == 2 * 256
    assert 0 < out['arms']['apt']['tokens'] < 2 * 256
    assert out['speedup'] > 0


def test_window_pad_refused_for_segmentation(images):
    proc = run_tool([
        'tools/analysis/benchmark.py', TOY_SEG[0], '--compare', TOY_SEG[1],
        '--images',
        str(images), '--baseline-pad', 'window'
    ],
                    check=False)
    assert proc.returncode != 0
    assert 'window' in proc.stderr + proc.stdout


@pytest.mark.slow  # ~40 s on the shared 2-core machine
def test_flops_counts_attention_by_groups(images):
    tool = load_tool('get_flops.py')
    from mmengine.dataset import Compose

    from mmapt.benchmark.analysis import (build_model_pair, load_config_pair,
                                          test_pipeline)
    apt_cfg, base_cfg, registry = load_config_pair(
        osp.join(ROOT, TOY_DET[0]), osp.join(ROOT, TOY_DET[1]))
    apt_cfg.model.backbone.thresholds = (-1, -1, -1)  # nothing merges
    apt, base = build_model_pair(apt_cfg, base_cfg, registry)
    paths = [str(images / 'img0.png')]
    plain = tool.count_model(base, Compose(test_pipeline(base_cfg)), paths)
    nomerge = tool.count_model(apt, Compose(test_pipeline(apt_cfg)), paths)
    # EVA-02-tiny, 12 blocks of 192 channels on 16 x 16 cells: 8 window
    # blocks of four 64-token windows, 4 global blocks of 256 tokens.
    expected = 4 * 192 * (8 * 4 * 64**2 + 4 * 256**2) / 1e9
    assert plain['attention'] == pytest.approx(expected, rel=1e-9)
    assert nomerge['attention'] == pytest.approx(expected, rel=1e-9)
    # With nothing merged APT is the plain model, FLOP for FLOP.
    assert nomerge['backbone'] == pytest.approx(plain['backbone'], rel=1e-6)
    assert plain['model'] > plain['backbone'] > plain['attention']

    proc = run_tool([
        'tools/analysis/get_flops.py', TOY_DET[0], '--compare', TOY_DET[1],
        '--images',
        str(images), '--num-images', '2', '--json'
    ],
                    timeout=600)
    out = last_json(proc)
    assert out['backbone_flops_ratio'] > 1.1  # merged tokens cost less
    assert out['apt_backbone_gflops'] < out['baseline_backbone_gflops']
    assert out['attention_gflops']['apt'] < out['attention_gflops']['baseline']


def test_train_mode_times_whole_iterations(toy_coco_cwd):
    data = toy_coco_cwd / 'data' / 'toy_coco'
    proc = run_tool([
        'tools/analysis/benchmark.py', TOY_DET[0], '--compare', TOY_DET[1],
        '--train', '--images',
        str(data / 'annotations' / 'instances_train2017.json'), '--img-prefix',
        str(data / 'train2017'), '--num-images', '2', '--repeat', '1',
        '--warmup', '0', '--json'
    ],
                    timeout=600)
    out = last_json(proc)
    assert out['mode'] == 'train' and out['canvas'] == 256
    arms = out['arms']
    assert set(arms) == {'baseline', 'apt'}
    for arm in arms.values():
        assert [len(t) for t in arm['iter_ms']] == [1, 1]
        total = arm['total_ms']
        # One iteration = preprocess + loss forward + backward and step.
        parts = total['preprocess_ms'] + total['forward_ms'] + \
            total['backward_ms']
        assert parts == pytest.approx(total['iter_ms'], rel=1e-3)
        assert 0 < total['backbone_ms'] < total['forward_ms']
    assert arms['baseline']['tokens'] == 2 * 256
    assert 0 < arms['apt']['tokens'] < 2 * 256
    assert arms['apt']['total_ms']['tokenizer_ms'] > 0
    assert 'tokenizer_ms' not in arms['baseline']['total_ms']
    assert out['speedup'] == pytest.approx(
        out['baseline_iter_ms'] / out['apt_iter_ms'], rel=1e-3)


def test_train_mode_needs_annotations(images):
    proc = run_tool([
        'tools/analysis/benchmark.py', TOY_DET[0], '--compare', TOY_DET[1],
        '--train', '--images',
        str(images)
    ],
                    check=False)
    assert proc.returncode != 0 and 'annotation JSON' in proc.stderr


def test_shrink_canvas_rewrites_every_canvas_size():
    from mmapt.benchmark.analysis import load_config
    from mmapt.benchmark.train import shrink_canvas, train_pipeline_of
    cfg = load_config(osp.join(ROOT, 'configs/apt_vitdet_coco.py'))
    shrink_canvas(cfg, 512)
    pre = cfg.model.data_preprocessor
    assert pre.pad_size_divisor == 512
    assert tuple(pre.batch_augments[0].size) == (512, 512)
    assert cfg.model.backbone.img_size == 512
    sizes = {
        t.type: tuple(t.get('scale') or t.get('crop_size'))
        for t in train_pipeline_of(cfg)
        if t.type in ('RandomResize', 'RandomCrop')
    }
    assert sizes == {'RandomResize': (512, 512), 'RandomCrop': (512, 512)}
