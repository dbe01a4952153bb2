"""End-to-end segmentation: toy data -> tools/train.py -> tools/test.py ->
mmseg inference API and demo, all on CPU.

The training run is shared by the tests of this module (a module fixture):
a few iterations of ``configs/toy/toy_apt_seg.py`` on a handful of generated
images, with validation at the end.
"""
import glob
import json
import os.path as osp

import numpy as np
import pytest
from conftest import ROOT, run_tool

from mmapt.datasets.toy import ade as toy_ade
from mmapt.engine import trusted_checkpoints
from mmapt.models.backbones import count_tokens

pytest.importorskip('mmseg')

TOY_APT = osp.join(ROOT, 'configs', 'toy', 'toy_apt_seg.py')
ITERS = 4


def _data_options(data_root):
    return [
        f'{loader}.dataset.data_root={data_root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ] + [
        f'{loader}.{key}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
        for key in ('num_workers=0', 'persistent_workers=False')
    ]


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_ade'))
    run_tool([
        'tools/misc/make_toy_ade.py', root, '--num-train', '8', '--num-val',
        '2'
    ])
    return root


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('train'))
    proc = run_tool([
        'tools/train.py', TOY_APT, '--work-dir', work_dir, '--cfg-options',
        *_data_options(toy_root), f'train_cfg.max_iters={ITERS}',
        f'train_cfg.val_interval={ITERS}',
        f'default_hooks.checkpoint.interval={ITERS}',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2'
    ])
    return dict(
        work_dir=work_dir,
        log=proc.stdout + proc.stderr,
        checkpoint=osp.join(work_dir, f'iter_{ITERS}.pth'))


def test_make_toy_ade_layout_and_determinism(toy_root, tmp_path):
    import cv2
    for split, num in (('training', 8), ('validation', 2)):
        imgs = sorted(glob.glob(osp.join(toy_root, 'images', split, '*.jpg')))
        anns = sorted(
            glob.glob(osp.join(toy_root, 'annotations', split, '*.png')))
        assert len(imgs) == len(anns) == num
        assert [osp.basename(p)[:-4] for p in imgs] == \
            [osp.basename(p)[:-4] for p in anns]
    labels = np.concatenate([
        cv2.imread(p, cv2.IMREAD_UNCHANGED).ravel() for p in glob.glob(
            osp.join(toy_root, 'annotations', 'training', '*.png'))
    ])
    assert labels.max() <= 6 and set(np.unique(labels)) >= {1, 2}
    # same seed -> identical files
    again = str(tmp_path / 'again')
    run_tool([
        'tools/misc/make_toy_ade.py', again, '--num-train', '2', '--num-val',
        '0'
    ])
    for name in ('images/training/toy_000001.jpg',
                 'annotations/training/toy_000001.png'):
        with open(osp.join(toy_root, name),
                  'rb') as f1, open(osp.join(again, name), 'rb') as f2:
            assert f1.read() == f2.read()


@pytest.mark.slow
def test_train_tool_writes_checkpoint_metrics_and_tokens(trained):
    assert osp.isfile(trained['checkpoint'])
    scalars = glob.glob(
        osp.join(trained['work_dir'], '*', 'vis_data', 'scalars.json'))
    assert scalars
    records = [json.loads(line) for line in open(scalars[0])]
    train = [r for r in records if 'loss' in r]
    assert len(train) == ITERS
    assert all(np.isfinite(r['loss']) for r in train)
    # TokenStatsHook logs the APT token counts during training
    assert all(0 < r['keep_ratio'] <= 1 for r in train)
    assert all(r['tokens'] <= r['baseline_tokens'] for r in train)
    val = [r for r in records if 'mIoU' in r]
    assert len(val) == 1 and 0 <= val[0]['mIoU'] <= 100


@pytest.mark.slow
def test_test_tool_writes_metrics_and_masks(trained, toy_root, tmp_path):
    work_dir = str(tmp_path / 'test')
    masks = str(tmp_path / 'masks')
    run_tool([
        'tools/test.py', TOY_APT, trained['checkpoint'], '--work-dir',
        work_dir, '--out', masks, '--cfg-options', *_data_options(toy_root)
    ])
    with open(osp.join(work_dir, 'test_metrics.json')) as f:
        metrics = json.load(f)
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert 0 <= metrics[key] <= 100
    assert 0 < metrics['keep_ratio'] <= 1
    assert metrics['tokens'] <= metrics['baseline_tokens']
    assert metrics['time_per_iter'] > 0
    written = sorted(glob.glob(osp.join(masks, '*.png')))
    assert [osp.basename(p)
            for p in written] == ['toy_000000.png', 'toy_000001.png']


def _real_size_image(tmp_path):
    import cv2
    gen = toy_ade
    image, _ = gen.make_scene(np.random.RandomState(5), 512, 683)
    path = str(tmp_path / 'scene.jpg')
    cv2.imwrite(path, image)
    return path


@pytest.mark.slow
def test_inference_model_returns_mask_of_image_size(trained, tmp_path):
    from mmseg.apis import inference_model, init_model
    img = _real_size_image(tmp_path)
    with trusted_checkpoints():  # a Runner-written checkpoint
        model = init_model(TOY_APT, trained['checkpoint'], device='cpu')
    assert model.dataset_meta['classes'][0] == 'wall'
    with count_tokens(model.backbone) as counter:
        result = inference_model(model, img)
    assert result.pred_sem_seg.data.shape == (1, 512, 683)
    assert int(result.pred_sem_seg.data.max()) < 6
    assert counter.per_image()['keep_ratio'][0] <= 1


@pytest.mark.slow
def test_inference_model_with_the_ade20k_config(tmp_path):
    """The real ADE20K config (tiny arch, random weights) through the API on
    a 683 x 512 image: slide inference over two 512 windows."""
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'apt_upernet_ade20k.py'))
    cfg.model.backbone.update(arch='tiny', init_cfg=None)
    cfg.model.neck.embed_dim = 192
    cfg.model.decode_head.update(in_channels=[192] * 4, channels=32)
    cfg.model.auxiliary_head.update(in_channels=192, channels=16)
    img = _real_size_image(tmp_path)
    model = init_model(cfg, None, device='cpu')
    result = inference_model(model, img)
    assert result.pred_sem_seg.data.shape == (1, 512, 683)
    assert result.seg_logits.data.shape == (150, 512, 683)


@pytest.mark.slow
def test_mmseg_inferencer(trained, tmp_path):
    from mmseg.apis import MMSegInferencer
    img = _real_size_image(tmp_path)
    with trusted_checkpoints():  # a Runner-written checkpoint
        inferencer = MMSegInferencer(
            model=TOY_APT, weights=trained['checkpoint'], device='cpu')
    out_dir = str(tmp_path / 'vis')
    result = inferencer(img, out_dir=out_dir, return_datasamples=True)
    assert result.pred_sem_seg.data.shape == (1, 512, 683)
    assert glob.glob(osp.join(out_dir, 'vis', '*.jpg')) or glob.glob(
        osp.join(out_dir, 'vis', '*.png'))


@pytest.mark.slow
def test_image_demo_on_a_segmentation_config(trained, tmp_path):
    img = _real_size_image(tmp_path)
    out_file = str(tmp_path / 'demo.png')
    run_tool([
        'demo/image_demo.py', img, TOY_APT, trained['checkpoint'],
        '--out-file', out_file, '--device', 'cpu'
    ])
    import cv2
    drawn = cv2.imread(out_file)
    assert drawn is not None and drawn.shape[0] >= 512 and \
        drawn.shape[1] >= 683


def test_missing_data_root_is_a_clear_error(tmp_path):
    config = osp.join(ROOT, 'configs', 'apt_upernet_ade20k.py')
    proc = run_tool([osp.join(ROOT, 'tools', 'train.py'), config],
                    cwd=str(tmp_path),
                    check=False,
                    timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'FileNotFoundError' in err
    assert 'data/ade/ADEChallengeData2016' in err
    assert 'make_toy_ade.py' in err
