"""``--accelerate`` where users run models: tools/test.py and the mmdet
inference API give the same predictions compiled as eager (toy APT
detector, random weights, CPU), and the switch refuses configs it cannot
apply to."""
import os.path as osp
import pickle

import pytest
import torch
from conftest import ROOT, run_tool
from mmengine.config import Config

from mmapt.engine.accelerate import apply_accelerate

pytest.importorskip('mmdet')

TOY_APT_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
# A 4-block backbone keeps compiling short; every box kept, so the
# predictions compared are many.
SMALL_ARCH = dict(embed_dims=192, num_layers=4, num_heads=3, scale_mlp=False)
SMALL = {
    'model.backbone.global_attn_indexes': (1, 3),
    'model.test_cfg.rcnn.score_thr': 0.0,
    'model.test_cfg.rcnn.nms.min_score': 0.0,
}
LOADER = [
    f'test_dataloader.{k}'
    for k in ('num_workers=0', 'persistent_workers=False', 'batch_size=2')
]


def small_config(path):
    """The toy APT detector with SMALL applied, written to ``path``."""
    cfg = Config.fromfile(TOY_APT_DET)
    cfg.model.backbone.arch = SMALL_ARCH  # replaces the name
    cfg.merge_from_dict(SMALL)
    cfg.dump(str(path))
    return str(path)


@pytest.fixture(scope='module')
def random_det(tmp_path_factory):
    """The small toy APT detector's config and a random-weight checkpoint."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    folder = tmp_path_factory.mktemp('random_det')
    config = small_config(folder / 'small_apt_det.py')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    ckpt = folder / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    return config, str(ckpt)


def _predictions(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _assert_same_detections(got, want, top=20):
    """The ``top`` highest-scoring detections of every image agree: each
    has an eager twin with its label, score and box (random weights give
    many near-tied scores, whose order rounding may swap)."""
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        a, b = a['pred_instances'], b['pred_instances']
        assert len(a['bboxes']) > top and len(b['bboxes']) > top
        for i in a['scores'].argsort(descending=True)[:top].tolist():
            twin = ((b['scores'] - a['scores'][i]).abs()
                    < 1e-3) & (b['labels'] == a['labels'][i]) & (
                        (b['bboxes'] - a['bboxes'][i]).abs().amax(1) < 0.05)
            assert twin.any(), f'detection {i} has no eager twin'


@pytest.mark.slow
def test_test_py_compiled_gives_the_eager_metrics(toy_coco_cwd, random_det,
                                                  tmp_path):
    config, ckpt = random_det
    results = {}
    for name, extra in (('eager', []), ('compile', ['--accelerate',
                                                    'compile'])):
        work_dir = tmp_path / name
        run_tool([
            'tools/test.py', config, ckpt, '--work-dir',
            str(work_dir), '--out',
            str(work_dir / 'pred.pkl'), *extra, '--cfg-options', *LOADER
        ],
                 cwd=toy_coco_cwd)
        with open(work_dir / 'test_metrics.json') as f:
            import json
            results[name] = (json.load(f), _predictions(work_dir / 'pred.pkl'))
    (eager, eager_pred), (compiled, compiled_pred) = results.values()
    _assert_same_detections(compiled_pred, eager_pred)
    for key in ('coco/bbox_mAP', 'tokens', 'baseline_tokens', 'keep_ratio'):
        assert compiled[key] == pytest.approx(eager[key], abs=1e-3), key


@pytest.mark.slow
def test_det_inferencer_compiled_equals_eager(random_det, tmp_path):
    import cv2
    import numpy as np
    from mmdet.apis import DetInferencer

    from mmapt.engine import trusted_checkpoints
    config, ckpt = random_det
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):  # flat background, a textured square
        img = np.full((200, 300, 3), (40, 160, 90), dtype=np.uint8)
        img[40 + 20 * i:140, 100:200] = rng.integers(0, 255,
                                                     (100 - 20 * i, 100, 3))
        images.append(str(tmp_path / f'{i}.png'))
        cv2.imwrite(images[-1], img)
    outputs = {}
    for mode in (None, 'compile'):
        cfg = Config.fromfile(config)
        apply_accelerate(cfg, mode)
        with trusted_checkpoints():
            inferencer = DetInferencer(model=cfg, weights=ckpt, device='cpu')
        assert inferencer.model.backbone.accelerate == mode
        outputs[mode] = inferencer(
            images, no_save_vis=True, return_datasamples=True)['predictions']
    want = [p.to_dict() for p in outputs[None]]
    got = [p.to_dict() for p in outputs['compile']]
    _assert_same_detections(got, want)


def test_apply_accelerate_sets_the_backbone_or_says_why_not():
    cfg = Config.fromfile(TOY_APT_DET)
    apply_accelerate(cfg, None)
    assert 'accelerate' not in cfg.model.backbone
    apply_accelerate(cfg, 'compile')
    assert cfg.model.backbone.accelerate == 'compile'
    tta = Config(dict(model=dict(type='DetTTAModel', module=cfg.model)))
    apply_accelerate(tta, 'cuda_graphs')
    assert tta.model.module.backbone.accelerate == 'cuda_graphs'
    resnet = Config(dict(model=dict(backbone=dict(type='ResNet', depth=50))))
    with pytest.raises(ValueError, match='not an mmapt ViT backbone'):
        apply_accelerate(resnet, 'compile')
    with pytest.raises(ValueError, match='no model.backbone'):
        apply_accelerate(Config(dict(model=dict(type='X'))), 'compile')


def test_tools_take_the_switch():
    for tool in ('tools/test.py', 'demo/image_demo.py',
                 'tools/analysis/benchmark.py',
                 'tools/analysis/benchmark_backbone.py'):
        out = run_tool([tool, '--help']).stdout
        assert '--accelerate' in out and 'cuda_graphs' in out, tool
    # The old names forward to benchmark.py's modes.
    out = run_tool(['tools/analysis/check_amp.py', '--help']).stdout
    assert '--dtypes' in out and '--compare' not in out


def test_mmseg_init_model_takes_the_switch():
    from mmseg.apis import init_model
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'toy', 'toy_apt_seg.py'))
    apply_accelerate(cfg, 'compile')
    model = init_model(cfg, device='cpu')
    assert model.backbone.accelerate == 'compile'
    assert model.backbone.accelerating(torch.device('cpu')) is False  # grad
    with torch.no_grad():
        assert model.backbone.accelerating(torch.device('cpu'))
