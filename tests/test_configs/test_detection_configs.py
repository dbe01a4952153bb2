"""Every detection config loads and builds its model and pipelines without
data; the recipe values are the ones promised; the APT-B detector (tiny
backbone override) trains one step and predicts on a 256 x 256 CPU input."""
import glob
import os.path as osp

import pytest
import torch

pytest.importorskip('mmdet')
from conftest import ROOT
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from mmapt.models.backbones import count_tokens  # noqa: E402


def det_configs():
    """The detection configs: configs/*vitdet*.py and configs/toy/*_det*.py
    (each must say default_scope='mmdet'; checked below)."""
    return sorted(
        glob.glob(osp.join(ROOT, 'configs', '*vitdet*.py')) +
        glob.glob(osp.join(ROOT, 'configs', 'toy', '*_det*.py')))


DET_CONFIGS = det_configs()
APT_CONFIGS = [
    p for p in DET_CONFIGS
    if Config.fromfile(p).model.backbone.type.startswith('APT')
]


def load(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name))


def test_all_detection_configs_are_found():
    names = {osp.relpath(p, osp.join(ROOT, 'configs')) for p in DET_CONFIGS}
    assert names >= {
        'apt_vitdet_coco.py', 'eva02_vitdet_coco.py',
        'apt_vitdet_coco_large.py', 'eva02_vitdet_coco_large.py',
        'apt_vitdet_coco_finetune.py', 'toy/toy_apt_det.py',
        'toy/toy_eva02_det.py', 'toy/toy_apt_det_finetune.py'
    }


@pytest.mark.parametrize(
    'path', DET_CONFIGS, ids=[osp.basename(p) for p in DET_CONFIGS])
def test_config_builds_model_and_pipelines(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(
        imports=['mmapt'], allow_failed_imports=False)
    assert dict(type='TokenStatsHook') in cfg.custom_hooks
    init_default_scope('mmdet')
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'CascadeRCNN'
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    assert type(model.neck).__name__ == 'SimpleFPN'
    assert len(model.roi_head.bbox_head) == 3
    for split in ('train', 'val', 'test'):
        pipeline = Compose(cfg[f'{split}_dataloader'].dataset.pipeline)
        assert len(pipeline.transforms) >= 4


@pytest.mark.parametrize(
    'path', APT_CONFIGS, ids=[osp.basename(p) for p in APT_CONFIGS])
def test_apt_configs_are_consistent(path):
    cfg = Config.fromfile(path)
    bb = cfg.model.backbone
    pre = cfg.model.data_preprocessor
    # The tokenizer un-normalises with the backbone's mean/std.
    assert list(bb.mean) == list(pre.mean)
    assert list(bb.std) == list(pre.std)
    largest = bb.patch_size * 2**len(bb.thresholds)
    multiple = largest if not bb.window_size else bb.window_size * \
        bb.patch_size
    assert bb.window_size % (largest // bb.patch_size) == 0
    # Train and test inputs are padded to the canvas: a multiple of the
    # largest patch and of the window.
    canvas = pre.batch_augments[0].size
    assert canvas[0] == canvas[1] == pre.pad_size_divisor
    assert canvas[0] % multiple == 0
    resize = [
        t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize'
    ]
    assert tuple(resize[0].scale) == tuple(canvas)
    assert not [
        t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Pad'
    ]
    # APT layers always get a gradient (tests/test_engine/test_ddp_apt.py):
    # DDP needs
    # no find_unused_parameters, which would slow every iteration.
    assert not cfg.get('find_unused_parameters', False)


def test_recipe_values():
    base, apt = load('eva02_vitdet_coco.py'), load('apt_vitdet_coco.py')
    large = load('eva02_vitdet_coco_large.py')
    bb = base.model.backbone
    assert (bb.arch, bb.window_size, bb.drop_path_rate) == ('base', 32, 0.1)
    assert tuple(bb.global_attn_indexes) == (1, 3, 5, 7, 9, 11)
    assert bb.init_cfg.checkpoint.endswith('.pth')
    assert tuple(apt.model.backbone.thresholds) == (2.0, 2.0, 0.3)
    for cfg in (base, apt):
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.optimizer.lr == 5e-5
        assert cfg.optim_wrapper.optimizer.weight_decay == 0.1
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.7
        assert cfg.train_cfg.max_iters == 60000
        assert cfg.auto_scale_lr.base_batch_size == 128
        assert cfg.model.test_cfg.rcnn.nms.type == 'soft_nms'
        resize = [t for t in cfg.train_pipeline if t.type == 'RandomResize']
        assert tuple(resize[0].ratio_range) == (0.1, 2.0)
        assert tuple(resize[0].scale) == (1536, 1536)
    assert large.model.backbone.arch == 'large'
    assert tuple(large.model.backbone.global_attn_indexes) == tuple(
        range(2, 24, 3))
    assert large.model.backbone.drop_path_rate == 0.4
    assert large.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.8
    assert large.model.neck.backbone_channel == 1024
    assert load('apt_vitdet_coco_large.py').model.backbone.type == 'APTEVA02'
    ft = load('apt_vitdet_coco_finetune.py')
    assert ft.train_cfg.max_iters == 0.05 * base.train_cfg.max_iters
    assert ft.optim_wrapper.optimizer.lr == pytest.approx(
        base.optim_wrapper.optimizer.lr / 10)
    assert ft.load_from and ft.model.backbone.init_cfg is None
    assert ft.model.backbone.type == 'APTEVA02'


def test_toy_configs_differ_only_in_the_backbone():
    apt, plain = load('toy/toy_apt_det.py'), load('toy/toy_eva02_det.py')
    assert plain.model.backbone.type == 'EVA02'
    assert apt.model.backbone.type == 'APTEVA02'
    assert apt.model.backbone.arch == 'tiny'
    for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                'train_dataloader', 'randomness'):
        assert apt[key] == plain[key], key
    assert apt.randomness.seed == plain.randomness.seed
    # The authors' fine-tune recipe on the toy: 5% of the iterations, lr/10,
    # from the trained toy baseline.
    ft = load('toy/toy_apt_det_finetune.py')
    assert ft.train_cfg.max_iters == 0.05 * plain.train_cfg.max_iters
    assert ft.optim_wrapper.optimizer.lr == pytest.approx(
        plain.optim_wrapper.optimizer.lr / 10)
    assert ft.load_from == 'work_dirs/toy_eva02_det/iter_300.pth'
    assert plain.train_cfg.max_iters == 300


def tiny_apt_detector_cfg(name='apt_vitdet_coco.py'):
    """configs/apt_vitdet_coco.py (or ``name``) with a tiny backbone at 256 x
    256, 64 channels in neck and heads and fewer sampled RoIs; everything
    else (windows + global blocks, APT thresholds, SimpleFPN with LN, 3
    cascade stages of 4conv1fc LN heads, mask head, soft-NMS, optimizer) as
    configured."""
    cfg = load(name)
    ch = 32
    options = {
        'model.backbone.arch': 'tiny',
        'model.backbone.img_size': 256,
        'model.backbone.window_size': 8,
        'model.backbone.global_attn_indexes': (2, 5, 8, 11),
        'model.backbone.init_cfg': None,
        'model.neck.backbone_channel': 192,
        'model.neck.in_channels': [48, 96, 192, 192],
        'model.neck.out_channels': ch,
        'model.rpn_head.in_channels': ch,
        'model.rpn_head.feat_channels': ch,
        'model.roi_head.bbox_roi_extractor.out_channels': ch,
        'model.roi_head.mask_roi_extractor.out_channels': ch,
        'model.roi_head.mask_head.in_channels': ch,
        'model.roi_head.mask_head.conv_out_channels': ch,
        'model.data_preprocessor.batch_augments': None,
        'model.data_preprocessor.pad_size_divisor': 256,
        'model.train_cfg.rpn_proposal.max_per_img': 200,
        'model.test_cfg.rpn.max_per_img': 100,
    }
    for i in range(3):
        options[f'model.roi_head.bbox_head.{i}.in_channels'] = ch
        options[f'model.roi_head.bbox_head.{i}.conv_out_channels'] = ch
        options[f'model.roi_head.bbox_head.{i}.fc_out_channels'] = 256
        options[f'model.train_cfg.rcnn.{i}.sampler.num'] = 64
    cfg.merge_from_dict(options)
    return cfg


def synthetic_batch(background='flat'):
    """One 256 x 256 image: a textured square on a flat background (APT
    merges the background) or, with ``background='noise'``, on noise (APT
    merges nothing)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(0)
    img = torch.full((3, 256, 256), 90, dtype=torch.uint8)
    if background == 'noise':
        img = torch.randint(
            0, 256, (3, 256, 256), generator=g, dtype=torch.uint8)
    img[:, 64:160, 80:176] = torch.randint(
        0, 256, (3, 96, 96), generator=g, dtype=torch.uint8)
    masks = torch.zeros(1, 256, 256, dtype=torch.uint8)
    masks[0, 64:160, 80:176] = 1
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(256, 256),
            ori_shape=(256, 256),
            scale_factor=(1.0, 1.0),
            pad_shape=(256, 256)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[80., 64., 176., 160.]]),
        labels=torch.tensor([3]),
        masks=BitmapMasks(masks.numpy(), 256, 256))
    return dict(inputs=[img], data_samples=[sample])


def test_apt_detector_tiny_train_step_and_predict():
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    cfg = tiny_apt_detector_cfg()
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
    optim_cfg.pop('loss_scale')
    optim = build_optim_wrapper(model, optim_cfg)

    model.train()
    before = model.backbone.blocks[0].attn.proj.weight.detach().clone()
    with count_tokens(model.backbone) as counter:
        losses = model.train_step(synthetic_batch(), optim)
    assert {'loss_rpn_cls', 's0.loss_cls', 's2.loss_bbox',
            's0.loss_mask'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(before, model.backbone.blocks[0].attn.proj.weight)
    stats = counter.per_image()
    assert stats['baseline_tokens'].tolist() == [256]
    # The flat background merges into large patches.
    assert stats['tokens'][0] < 0.7 * 256

    model.eval()
    with torch.no_grad():
        (result, ) = model.test_step(synthetic_batch())
    pred = result.pred_instances
    assert pred.bboxes.shape[1] == 4
    assert len(pred.scores) == len(pred.labels) == len(pred.bboxes)
    assert pred.masks.shape[-2:] == (256, 256)


def _optim_from_config(name):
    """The model and optimizer of a config (tiny arch), AMP wrapper swapped
    for the plain one (no CUDA here)."""
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    cfg = tiny_apt_detector_cfg(name)
    model = MODELS.build(cfg.model)
    optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
    optim_cfg.pop('loss_scale', None)
    return cfg, model, build_optim_wrapper(model, optim_cfg)


def test_finetune_gives_apt_layers_the_full_rate():
    """apt_vitdet_coco_finetune.py: the zero-initialised APT layers learn at
    least as fast as the last block (layer decay would give them
    0.7**13 = 1% of it, as the patch embedding beside them)."""
    cfg, model, optim = _optim_from_config('apt_vitdet_coco_finetune.py')
    assert cfg.optim_wrapper.paramwise_cfg.apt_lr_mult == 1.0
    lr = {}
    for group in optim.optimizer.param_groups:
        for name in group['param_names']:
            lr[name] = group['lr']
    last = max(lr[n] for n in lr if n.startswith('backbone.blocks.11.'))
    apt = {n: v for n, v in lr.items() if n.startswith('backbone.apt_embed.')}
    assert len(apt) == 4
    assert all(v >= last for v in apt.values())
    assert all(v == pytest.approx(5e-6) for v in apt.values())
    # The pretrained embedding keeps layer decay.
    assert lr['backbone.patch_embed.proj.weight'] == pytest.approx(5e-6 *
                                                                   0.7**13)
