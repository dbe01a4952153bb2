"""The DINOv2-family configs (ViT / APTViT): recipe, sizes, model wiring, and
toy training through tools/train.py."""
import copy
import glob
import json
import os.path as osp

import pytest
from conftest import ROOT, run_tool

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
DET = {
    'dinov2_vitdet_coco.py': 'apt_dinov2_vitdet_coco.py',
    'toy/toy_dinov2_det.py': 'toy/toy_apt_dinov2_det.py',
}
SEG = {
    'dinov2_upernet_ade20k.py': 'apt_dinov2_upernet_ade20k.py',
    'toy/toy_dinov2_seg.py': 'toy/toy_apt_dinov2_seg.py',
}
ALL = sorted([*DET, *DET.values(), *SEG, *SEG.values()])
FAST_LOADERS = [
    f'{loader}.{key}'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    for key in ('num_workers=0', 'persistent_workers=False')
]


def _load(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def _largest_patch(backbone):
    return backbone.patch_size * 2**len(backbone.get('thresholds', ()))


@pytest.mark.parametrize('name', ALL)
def test_sizes_statistics_and_backbone(name):
    cfg = _load(name)
    bb, pre = cfg.model.backbone, cfg.model.data_preprocessor
    assert cfg.custom_imports == dict(
        imports=['mmapt'], allow_failed_imports=False)
    assert bb.type == ('APTViT' if 'apt_' in name else 'ViT')
    assert (bb.patch_size, bb.pretrain_patch_size) == (14, 14)
    assert bb.use_cls_token and bb.num_register_tokens == 4
    assert list(pre.mean) == IMAGENET_MEAN and list(pre.std) == IMAGENET_STD
    if bb.type == 'APTViT':
        # The tokenizer un-normalises with the preprocessor's statistics.
        assert list(bb.mean) == list(pre.mean)
        assert list(bb.std) == list(pre.std)
    largest = _largest_patch(bb)
    if name in DET or name in DET.values():
        assert cfg.default_scope == 'mmdet'
        # The canvas is a multiple of the window, the window of the largest
        # patch (for APT) and the patch.
        canvas = pre.batch_augments[0].size
        assert canvas[0] == canvas[1] == pre.pad_size_divisor == bb.img_size
        window_px = bb.window_size * bb.patch_size
        assert canvas[0] % window_px == 0 and window_px % largest == 0
        for key in ('train_dataloader', 'test_dataloader'):
            for t in cfg[key].dataset.pipeline:
                if t.type in ('RandomResize', 'Resize'):
                    assert tuple(t.scale) == tuple(canvas), (key, t)
                if t.type == 'RandomCrop':
                    assert tuple(t.crop_size) == tuple(canvas)
        assert not cfg.get('find_unused_parameters', False)
    else:
        assert cfg.default_scope == 'mmseg'
        sizes = [pre.size, pre.test_cfg['size'], cfg.model.test_cfg.crop_size]
        sizes += [
            t.crop_size for t in cfg.train_dataloader.dataset.pipeline
            if t.type == 'RandomCrop'
        ]
        for size in sizes:
            assert all(s % largest == 0 and s % 14 == 0 for s in size), size
        assert bb.img_size == sizes[0][0]


def test_recipes_follow_eva02():
    det, eva_det = _load('dinov2_vitdet_coco.py'), _load(
        'eva02_vitdet_coco.py')
    assert det.model.backbone.arch == 'base'
    assert det.model.backbone.img_size == 1568 == 14 * 112
    assert det.model.backbone.pretrain_img_size == 518
    assert det.model.backbone.window_size == 16
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg',
                'auto_scale_lr'):
        assert det[key] == eva_det[key], key
    assert det.model.backbone.global_attn_indexes == \
        eva_det.model.backbone.global_attn_indexes
    assert det.model.backbone.drop_path_rate == \
        eva_det.model.backbone.drop_path_rate
    assert det.model.neck.backbone_channel == 768
    assert _load('apt_dinov2_vitdet_coco.py').model.backbone.thresholds == \
        (2.0, 2.0, 0.3)

    seg, eva_seg = _load('dinov2_upernet_ade20k.py'), _load(
        'eva02_upernet_ade20k.py')
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg'):
        assert seg[key] == eva_seg[key], key
    assert tuple(seg.model.backbone.out_indices) == (3, 5, 7, 11)
    assert seg.model.backbone.window_size == 0
    assert seg.model.test_cfg.crop_size == (504, 504)
    assert _load('apt_dinov2_upernet_ade20k.py').model.backbone.thresholds \
        == (5.75, )


def _strip_apt(cfg):
    cfg = copy.deepcopy(cfg.to_dict())
    for key in ('type', 'thresholds', 'patch_sizes', 'entropy_bins', 'mean',
                'std'):
        cfg['model']['backbone'].pop(key, None)
    cfg.pop('custom_hooks', None)
    return cfg


@pytest.mark.parametrize('plain, apt', [*DET.items(), *SEG.items()])
def test_apt_config_is_its_baseline_plus_apt(plain, apt):
    assert _strip_apt(_load(apt)) == _strip_apt(_load(plain))


@pytest.mark.parametrize('name', ALL)
def test_models_build(name):
    """Full configs are built with the tiny arch (wiring, not size)."""
    cfg = _load(name)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.arch = 'tiny'
    model_cfg.backbone.init_cfg = None
    if cfg.default_scope == 'mmdet':
        model_cfg.neck.backbone_channel = 192
        model_cfg.neck.in_channels = [48, 96, 192, 192]
        from mmdet.registry import MODELS
    else:
        model_cfg.neck.embed_dim = 192
        model_cfg.decode_head.in_channels = [192] * 4
        model_cfg.decode_head.channels = 32
        model_cfg.auxiliary_head.in_channels = 192
        model_cfg.auxiliary_head.channels = 16
        from mmseg.registry import MODELS
    init_default_scope(cfg.default_scope)
    model = MODELS.build(model_cfg)
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    assert model.backbone.num_prefix_tokens == 5


# ------------------------------------------------------------ toy training
def _scalars(work_dir):
    (path, ) = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f]


def _train(name, work_dir, *options, cwd=ROOT):
    """Three iterations of a toy config through tools/train.py; the logged
    scalars."""
    run_tool([
        'tools/train.py',
        osp.join(ROOT, 'configs',
                 name), '--work-dir', work_dir, '--cfg-options', *FAST_LOADERS,
        'train_cfg.max_iters=3', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=3', 'train_dataloader.batch_size=2',
        *options
    ],
             cwd=cwd)
    assert osp.isfile(osp.join(work_dir, 'iter_3.pth'))
    return _scalars(work_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    'name', ['toy/toy_apt_dinov2_det.py', 'toy/toy_dinov2_det.py'])
def test_toy_detection_trains(name, toy_coco_cwd, tmp_path):
    rows = _train(
        name,
        str(tmp_path / 'work'),
        'train_cfg.val_interval=100',
        cwd=toy_coco_cwd)
    rows = [r for r in rows if 'loss' in r]
    assert len(rows) == 3 and all(r['loss'] > 0 for r in rows)
    if 'apt' in name:  # the toy canvas padding merges into large patches
        assert all(r['tokens'] < r['baseline_tokens'] for r in rows)


@pytest.fixture(scope='module')
def toy_ade(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy_ade'))
    run_tool([
        'tools/misc/make_toy_ade.py', root, '--num-train', '4', '--num-val',
        '1'
    ])
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    'name', ['toy/toy_apt_dinov2_seg.py', 'toy/toy_dinov2_seg.py'])
def test_toy_segmentation_trains(name, toy_ade, tmp_path):
    rows = _train(
        name, str(tmp_path / 'work'), 'train_cfg.val_interval=3', *[
            f'{loader}.dataset.data_root={toy_ade}'
            for loader in ('train_dataloader', 'val_dataloader',
                           'test_dataloader')
        ])
    assert len([r for r in rows if 'loss' in r]) == 3
    assert any('mIoU' in r for r in rows)  # slide inference ran
