"""Detection end to end on CPU: toy data -> tools/train.py -> tools/test.py
(CocoMetric) -> mmdet inference API and demo; the clear errors for a missing
data root or checkpoint; tools/dist_train.sh on 2 gloo processes.

The toy training run is shared by the slow tests (a module fixture). The toy
configs read ``data/toy_coco/`` relative to the working directory, so every
tool runs in a temporary directory holding a small generated set.
"""
import glob
import json
import os
import os.path as osp
import socket

import numpy as np
import pytest
from conftest import ROOT, run_tool

from mmapt.datasets.toy import coco as toy_coco
from mmapt.engine import trusted_checkpoints
from mmapt.models.backbones import count_tokens

pytest.importorskip('mmdet')

TOY_APT = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
ITERS = 16
FAST_LOADERS = [
    f'{loader}.{key}'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    for key in ('num_workers=0', 'persistent_workers=False')
]
# After a few iterations every foreground score is below the configured 0.05:
# keep all boxes so that CocoMetric has predictions to score.
KEEP_ALL = {
    'model.test_cfg.rcnn.score_thr': 0.0,
    'model.test_cfg.rcnn.nms.min_score': 0.0
}
FAST_OPTIONS = FAST_LOADERS + [f'{k}={v}' for k, v in KEEP_ALL.items()]


def read_scalars(work_dir):
    (path, ) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------- toy data
def test_toy_coco_is_deterministic_and_valid(tmp_path):
    from pycocotools.coco import COCO
    gen = toy_coco
    a = gen.make_split(str(tmp_path / 'a'), 'val', 6, 3, 160, 320)
    b = gen.make_split(str(tmp_path / 'b'), 'val', 6, 3, 160, 320)
    assert a == b
    assert (tmp_path / 'a' / 'val2017' / '000005.png').read_bytes() == \
        (tmp_path / 'b' / 'val2017' / '000005.png').read_bytes()
    coco = COCO(str(tmp_path / 'a' / 'annotations' / 'instances_val2017.json'))
    assert [c['name']
            for c in coco.loadCats(coco.getCatIds())] == list(gen.CLASSES)
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 6
    for ann in anns:
        mask = coco.annToMask(ann).astype(bool)
        x, y, w, h = ann['bbox']
        ys, xs = np.nonzero(mask)
        # The polygon is the drawn shape: pycocotools' raster of it matches
        # the box and area of OpenCV's (up to 2 px of rasterisation).
        assert abs(xs.min() - x) <= 2 and abs(ys.min() - y) <= 2
        assert abs(xs.max() + 1 - (x + w)) <= 2
        assert abs(ys.max() + 1 - (y + h)) <= 2
        assert abs(mask.sum() - ann['area']) <= 0.1 * ann['area'] + 20


# --------------------------------------------------------- clear errors
def test_missing_data_root_names_config_layout_and_toy_command(tmp_path):
    proc = run_tool(['tools/train.py', TOY_APT], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'FileNotFoundError' in err
    assert 'toy_apt_det.py' in err
    assert 'data/toy_coco/' in err
    assert 'make_toy_coco.py' in err
    assert 'instances_train2017.json' in err


def test_missing_data_root_of_coco_config(tmp_path, monkeypatch):
    from mmengine.config import Config

    from mmapt.engine.preflight import check_data
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'apt_vitdet_coco.py'))
    with pytest.raises(FileNotFoundError) as err:
        check_data(cfg, 'configs/apt_vitdet_coco.py', ('train', 'val'))
    msg = str(err.value)
    assert 'configs/apt_vitdet_coco.py' in msg and 'data/coco/' in msg
    assert 'train2017' in msg and 'make_toy_coco.py' in msg
    (tmp_path / 'data' / 'coco' / 'annotations').mkdir(parents=True)
    for name in ('train2017', 'val2017'):
        (tmp_path / 'data' / 'coco' / name).mkdir()
        (tmp_path / 'data' / 'coco' / 'annotations' /
         f'instances_{name}.json').write_text('{}')
    check_data(cfg, 'configs/apt_vitdet_coco.py', ('train', 'val'))


def test_missing_backbone_checkpoint_names_the_converter(tmp_path):
    coco = tmp_path / 'data' / 'coco'
    (coco / 'annotations').mkdir(parents=True)
    for name in ('train2017', 'val2017'):
        (coco / name).mkdir()
        (coco / 'annotations' / f'instances_{name}.json').write_text('{}')
    proc = run_tool(
        ['tools/train.py',
         osp.join(ROOT, 'configs', 'apt_vitdet_coco.py')],
        cwd=tmp_path,
        check=False)
    assert proc.returncode != 0
    assert 'checkpoints/eva02_B_pt_in21k_p16_mmapt.pth' in proc.stderr
    assert 'eva02_to_mmapt.py' in proc.stderr
    assert 'model.backbone.init_cfg=None' in proc.stderr


def test_missing_load_from_of_finetune_config(tmp_path, monkeypatch):
    from mmengine.config import Config

    from mmapt.engine.preflight import check_checkpoints
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'apt_vitdet_coco_finetune.py'))
    with pytest.raises(FileNotFoundError, match='load_from'):
        check_checkpoints(cfg, 'apt_vitdet_coco_finetune.py', True)


# ------------------------------------------------------ toy training run
@pytest.fixture(scope='module')
def trained(toy_coco_cwd, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('toy_apt_det'))
    run_tool([
        'tools/train.py', TOY_APT, '--work-dir', work_dir, '--cfg-options',
        *FAST_OPTIONS, f'train_cfg.max_iters={ITERS}',
        f'train_cfg.val_interval={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
        'param_scheduler.0.end=4'
    ],
             cwd=toy_coco_cwd)
    ckpt = osp.join(work_dir, f'iter_{ITERS}.pth')
    assert osp.isfile(ckpt)
    return dict(work_dir=work_dir, ckpt=ckpt, cwd=toy_coco_cwd)


@pytest.mark.slow
def test_training_loss_goes_down_and_tokens_are_logged(trained):
    rows = read_scalars(trained['work_dir'])
    train = [r for r in rows if 'loss' in r]
    assert len(train) == ITERS
    losses = [r['loss'] for r in train]
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.9 * first, losses
    assert all(r['tokens'] < r['baseline_tokens'] for r in train)
    val = [r for r in rows if 'coco/bbox_mAP' in r]
    assert val and 'coco/segm_mAP' in val[-1] and 'keep_ratio' in val[-1]


@pytest.mark.slow
def test_test_tool_writes_coco_metrics_and_predictions(trained, tmp_path):
    work_dir = str(tmp_path / 'test')
    out = str(tmp_path / 'preds.pkl')
    run_tool([
        'tools/test.py', TOY_APT, trained['ckpt'], '--work-dir', work_dir,
        '--out', out, '--cfg-options', *FAST_OPTIONS
    ],
             cwd=trained['cwd'])
    with open(osp.join(work_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics['baseline_tokens'] == 256
    assert 0 < metrics['keep_ratio'] < 1
    assert metrics['tokens'] == pytest.approx(256 * metrics['keep_ratio'])
    assert metrics['time_per_iter'] > 0
    import pickle
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 8
    assert {'bboxes', 'scores', 'labels',
            'masks'} <= set(preds[0]['pred_instances'])


@pytest.mark.slow
def test_test_tool_amp_bf16_on_cpu(trained, tmp_path):
    """--amp-dtype bf16 on CPU: backbone + neck in bf16, heads (mmcv NMS,
    RoIAlign: no CPU bf16 kernels) in fp32; same tokens as fp32."""
    work_dir = str(tmp_path / 'test_amp')
    run_tool([
        'tools/test.py', TOY_APT, trained['ckpt'], '--work-dir', work_dir,
        '--amp-dtype', 'bf16', '--cfg-options', *FAST_OPTIONS
    ],
             cwd=trained['cwd'])
    with open(osp.join(work_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)
    assert metrics['precision'] == 'cpu bfloat16 features'
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert metrics['baseline_tokens'] == 256
    assert 0 < metrics['keep_ratio'] < 1


def _check_predictions(result):
    pred = result['predictions'][0]
    assert {'bboxes', 'scores', 'labels', 'masks'} <= set(pred)
    assert len(pred['bboxes']) == len(pred['scores']) == len(
        pred['labels']) == len(pred['masks'])
    return pred


def plain_image(path):
    """A 300 x 200 image: a striped square on a flat background."""
    import cv2
    img = np.full((200, 300, 3), (40, 160, 90), dtype=np.uint8)
    stripes = (np.arange(80)[None, :] // 6 % 2).astype(bool)
    img[60:140, 120:200][np.broadcast_to(stripes, (80, 80))] = (250, 250, 0)
    cv2.imwrite(str(path), img)
    return str(path)


@pytest.mark.slow
def test_det_inferencer_with_toy_checkpoint_and_without(trained, tmp_path):
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    image = plain_image(tmp_path / 'plain.png')
    from mmengine.config import Config
    cfg = Config.fromfile(TOY_APT)
    cfg.merge_from_dict(KEEP_ALL)
    with trusted_checkpoints():  # a Runner-written checkpoint
        inferencer = DetInferencer(
            model=cfg, weights=trained['ckpt'], device='cpu')
    pred = _check_predictions(
        inferencer(image, no_save_vis=True, return_datasamples=False))
    assert len(pred['bboxes']) > 0
    assert all(0 <= label < 4 for label in pred['labels'])
    random_init = DetInferencer(model=TOY_APT, weights=None, device='cpu')
    _check_predictions(random_init(image, no_save_vis=True))

    with trusted_checkpoints():
        model = init_detector(TOY_APT, trained['ckpt'], device='cpu')
    with count_tokens(model.backbone) as counter:
        result = inference_detector(model, image)
    assert result.pred_instances.masks.shape[-2:] == (200, 300)
    # The flat background and the padding merge into large patches.
    assert counter.per_image()['keep_ratio'][0] < 0.7


@pytest.mark.slow
def test_image_demo_draws_detections_and_patch_grid(trained, tmp_path):
    import cv2
    image = osp.join(trained['cwd'], 'data', 'toy_coco', 'val2017',
                     '000001.png')
    out = str(tmp_path / 'demo.png')
    proc = run_tool([
        'demo/image_demo.py', image, TOY_APT, trained['ckpt'], '--out-file',
        out, '--device', 'cpu'
    ])
    picture = cv2.imread(out)
    assert picture is not None and picture.shape[1] > picture.shape[0]
    assert 'tokens / 256' in proc.stdout


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dist_train_on_two_cpu_processes(toy_coco_cwd, tmp_path):
    import sys
    work_dir = str(tmp_path / 'dist')
    proc = run_tool([
        'bash',
        osp.join(ROOT, 'tools', 'dist_train.sh'), TOY_APT, '2', '--work-dir',
        work_dir, '--cfg-options', *FAST_OPTIONS, 'train_cfg.max_iters=4',
        'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=1',
        'val_dataloader.batch_size=1'
    ],
                    cwd=toy_coco_cwd,
                    env=dict(
                        PYTHON=sys.executable,
                        PORT=str(free_port()),
                        OMP_NUM_THREADS='1'))
    log = proc.stdout + proc.stderr
    # mmengine's runtime-environment block: 2 processes over gloo.
    assert 'Distributed launcher: pytorch' in log, log[-3000:]
    assert 'GPU number: 2' in log
    assert "'backend': 'gloo'" in log
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))
    rows = read_scalars(work_dir)
    val = [r for r in rows if 'coco/bbox_mAP' in r]
    assert val and 'tokens' in val[-1]
    assert os.path.getsize(osp.join(work_dir, 'iter_4.pth')) > 0
