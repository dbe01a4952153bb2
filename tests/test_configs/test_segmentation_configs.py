"""Segmentation configs: load, build without data, follow the recipe, run.

Every mmseg config of the project loads and builds its model and pipelines
with no data set and no checkpoint present; the recipe numbers of
docs/method.md (section 6) are checked where a typo would silently change a
result; the APT configs equal their baselines except for the backbone; and
the model of ``configs/apt_upernet_ade20k.py`` (tiny arch) does one training
step and one slide-inference prediction on CPU.
"""
import copy
import glob
import os.path as osp

import pytest
import torch

pytest.importorskip('mmseg')

from conftest import ROOT
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import mmapt  # noqa: E402,F401
import mmapt.models.necks.vit_pyramid  # noqa: E402,F401
from mmapt.models.backbones import count_tokens  # noqa: E402

CONFIGS = osp.join(ROOT, 'configs')
# The EVA-02 family; the DINOv2 family is
# tests/test_configs/test_dinov2_configs.py's.
ADE_CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(CONFIGS, '*upernet_ade20k*.py'))
    if 'dinov2' not in osp.basename(p))
TOY_CONFIGS = ['configs/toy/toy_apt_seg.py', 'configs/toy/toy_eva02_seg.py']
SEG_CONFIGS = ADE_CONFIGS + TOY_CONFIGS
APT_CONFIGS = [p for p in SEG_CONFIGS if 'apt_' in osp.basename(p)]
ADE_ROOT = 'data/ade/ADEChallengeData2016'
IMPORTS = dict(imports=['mmapt'], allow_failed_imports=False)
# The released EVA-02 segmentors were fine-tuned with ImageNet statistics;
# the toy configs (from scratch) keep EVA-02's CLIP ones.
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
CLIP_MEAN = [122.7709383, 116.7460125, 104.09373615]
CLIP_STD = [68.5005327, 66.6321579, 70.32316305]


def _load(path: str) -> Config:
    return Config.fromfile(osp.join(ROOT, path))


def _build_model(cfg_model):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(cfg_model)


def test_all_expected_configs_exist():
    names = {osp.basename(p) for p in ADE_CONFIGS}
    assert names == {
        'apt_upernet_ade20k.py', 'eva02_upernet_ade20k.py',
        'apt_upernet_ade20k_large_512.py', 'eva02_upernet_ade20k_large_512.py',
        'apt_upernet_ade20k_large_640.py', 'eva02_upernet_ade20k_large_640.py',
        'apt_upernet_ade20k_finetune.py',
        'apt_upernet_ade20k_large_512_finetune.py',
        'apt_upernet_ade20k_large_640_finetune.py'
    }


@pytest.mark.parametrize('path', SEG_CONFIGS)
def test_config_basics(path):
    cfg = _load(path)
    assert cfg.custom_imports == IMPORTS
    assert cfg.default_scope == 'mmseg'
    assert cfg.model.type == 'EncoderDecoder'
    assert cfg.model.neck.type == 'ViTPyramidNeck'
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    if path in ADE_CONFIGS:
        # the released models: SyncBN in the x4 level, ImageNet statistics
        assert cfg.model.neck.norm_cfg['type'] == 'SyncBN'
        assert cfg.model.data_preprocessor.mean == IMAGENET_MEAN
        assert cfg.model.data_preprocessor.std == IMAGENET_STD
        assert cfg.model.backbone.use_cls_token is True
    else:
        # the toy trains from scratch with gloo DDP too: no BN variant
        assert 'BN' not in cfg.model.neck.norm_cfg['type']
        assert cfg.model.data_preprocessor.mean == CLIP_MEAN
        assert cfg.model.data_preprocessor.std == CLIP_STD
    assert cfg.model.test_cfg.mode == 'slide'
    assert cfg.val_evaluator.type == 'IoUMetric'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        if path in ADE_CONFIGS:
            assert dataset.type == 'ADE20KDataset'
            assert dataset.data_root == ADE_ROOT
        # ADE20K's reduce-zero-label convention everywhere
        loads = [t for t in dataset.pipeline if t.type == 'LoadAnnotations']
        assert loads and all(t.reduce_zero_label for t in loads)
    num_classes = 150 if path in ADE_CONFIGS else 6
    assert cfg.model.decode_head.num_classes == num_classes
    assert cfg.model.auxiliary_head.num_classes == num_classes


@pytest.mark.parametrize('path', SEG_CONFIGS)
def test_config_builds_model_and_pipelines_without_data(path, tmp_path):
    from mmseg.registry import TRANSFORMS
    cfg = _load(path)
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.model.backbone.arch == 'large':
        # Building 300M parameters only to check the wiring is slow on a
        # shared CPU: the large configs are built with the tiny arch and
        # their own depth-24 tap indices mapped to 12 layers.
        model_cfg.backbone.arch = 'tiny'
        model_cfg.backbone.out_indices = (3, 5, 7, 11)
        model_cfg.neck.embed_dim = 192
        model_cfg.decode_head.in_channels = [192] * 4
        model_cfg.decode_head.channels = 32
        model_cfg.auxiliary_head.in_channels = 192
        model_cfg.auxiliary_head.channels = 16
    model = _build_model(model_cfg)
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    assert len(model.neck.levels) == len(cfg.model.backbone.out_indices)
    for key in ('train_pipeline', 'test_pipeline'):
        for transform in cfg[key]:
            TRANSFORMS.build(copy.deepcopy(transform))
    for loader in ('train_dataloader', 'val_dataloader'):
        for transform in cfg[loader].dataset.pipeline:
            TRANSFORMS.build(copy.deepcopy(transform))


def _largest_patch(cfg) -> int:
    backbone = cfg.model.backbone
    return backbone.patch_size * 2**len(backbone.thresholds)


@pytest.mark.parametrize('path', APT_CONFIGS)
def test_apt_sizes_are_multiples_of_the_largest_patch(path):
    """Train crops, the train padding, slide windows and the test padding
    must all be multiples of APT's largest patch."""
    cfg = _load(path)
    largest = _largest_patch(cfg)
    assert cfg.model.backbone.thresholds == (5.75, )
    assert largest == 32
    sizes = [
        cfg.model.data_preprocessor.size,
        cfg.model.data_preprocessor.test_cfg['size'],
        cfg.model.test_cfg.crop_size,
    ]
    sizes += [
        t.crop_size for t in cfg.train_dataloader.dataset.pipeline
        if t.type == 'RandomCrop'
    ]
    for size in sizes:
        assert all(s % largest == 0 for s in size), (path, size, largest)
    # The tokenizer un-normalises with the preprocessor's statistics.
    assert cfg.model.backbone.mean == cfg.model.data_preprocessor.mean
    assert cfg.model.backbone.std == cfg.model.data_preprocessor.std
    assert any(h.type == 'TokenStatsHook' for h in cfg.custom_hooks)


def _strip_apt(cfg_dict: dict) -> dict:
    cfg_dict = copy.deepcopy(cfg_dict)
    backbone = cfg_dict['model']['backbone']
    for key in ('type', 'thresholds', 'patch_sizes', 'entropy_bins', 'mean',
                'std'):
        backbone.pop(key, None)
    cfg_dict.pop('custom_hooks', None)
    return cfg_dict


@pytest.mark.parametrize('apt, baseline', [
    ('apt_upernet_ade20k.py', 'eva02_upernet_ade20k.py'),
    ('apt_upernet_ade20k_large_512.py', 'eva02_upernet_ade20k_large_512.py'),
    ('apt_upernet_ade20k_large_640.py', 'eva02_upernet_ade20k_large_640.py'),
    ('toy/toy_apt_seg.py', 'toy/toy_eva02_seg.py'),
])
def test_apt_config_is_its_baseline_plus_apt(apt, baseline):
    cfg_apt = _load(osp.join('configs', apt))
    cfg_base = _load(osp.join('configs', baseline))
    assert cfg_apt.model.backbone.type == 'APTEVA02'
    assert cfg_base.model.backbone.type == 'EVA02'
    assert _strip_apt(cfg_apt.to_dict()) == _strip_apt(cfg_base.to_dict())


@pytest.mark.parametrize(
    'path, arch, lr, decay, iters, total_batch, taps, heads', [
        ('configs/eva02_upernet_ade20k.py', 'base', 6e-5, 0.85, 60000, 32,
         (3, 5, 7, 11), (768, 256)),
        ('configs/eva02_upernet_ade20k_large_512.py', 'large', 4e-5, 0.9,
         80000, 16, (7, 11, 15, 23), (1024, 256)),
        ('configs/eva02_upernet_ade20k_large_640.py', 'large', 4e-5, 0.9,
         80000, 16, (7, 11, 15, 23), (1536, 1536)),
    ])
def test_recipe_numbers(path, arch, lr, decay, iters, total_batch, taps,
                        heads):
    cfg = _load(path)
    backbone = cfg.model.backbone
    # the released models' widths, class token and position grid
    assert (cfg.model.decode_head.channels,
            cfg.model.auxiliary_head.channels) == heads
    assert backbone.use_cls_token is True
    assert backbone.pos_embed_grid * 16 == backbone.img_size
    assert backbone.pretrain_img_size // backbone.pretrain_patch_size == 16
    assert backbone.arch == arch
    assert tuple(backbone.out_indices) == taps
    assert backbone.window_size == 0 and tuple(
        backbone.global_attn_indexes) == ()
    assert backbone.drop_path_rate == 0.15
    assert backbone.patch_size == 16
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.checkpoint.startswith('checkpoints/eva02_')
    dim = 768 if arch == 'base' else 1024
    assert cfg.model.neck.embed_dim == dim
    assert tuple(cfg.model.neck.rescales) == (4, 2, 1, 0.5)
    assert cfg.model.decode_head.in_channels == [dim] * 4
    assert cfg.model.auxiliary_head.in_channels == dim
    assert cfg.model.auxiliary_head.in_index == 2
    assert cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == lr
    assert optim.optimizer.weight_decay == 0.05
    assert optim.constructor == 'LayerDecayOptimWrapperConstructor'
    assert optim.paramwise_cfg.layer_decay_rate == decay
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == 1500
    assert poly.type == 'PolyLR' and (poly.begin, poly.end) == (1500, iters)
    assert cfg.train_cfg.max_iters == iters
    # 8 GPUs x batch_size = the recipe's total batch
    assert cfg.train_dataloader.batch_size * 8 == total_batch
    assert cfg.auto_scale_lr.base_batch_size == total_batch
    crop = 640 if '640' in path else 512
    assert cfg.crop_size == (crop, crop)
    assert cfg.model.test_cfg.crop_size == (crop, crop)
    assert cfg.model.test_cfg.stride == ((341, 341) if crop == 512 else
                                         (426, 426))
    assert backbone.img_size == crop
    test_resize = [t for t in cfg.test_pipeline if t.type == 'Resize'][0]
    assert test_resize.scale == (4 * crop, crop)


@pytest.mark.parametrize('name, released', [
    ('apt_upernet_ade20k', 'eva02_B_ade_seg_upernet_sz512'),
    ('apt_upernet_ade20k_large_512', 'eva02_L_ade_seg_upernet_sz512'),
    ('apt_upernet_ade20k_large_640', 'eva02_L_ade_seg_upernet_sz640'),
])
def test_finetune_is_five_percent_at_a_tenth_of_the_lr(name, released):
    base = _load(f'configs/{name}.py')
    ft = _load(f'configs/{name}_finetune.py')
    assert ft.model.backbone.type == 'APTEVA02'
    assert ft.train_cfg.max_iters == base.train_cfg.max_iters * 5 // 100
    assert ft.optim_wrapper.optimizer.lr == pytest.approx(
        base.optim_wrapper.optimizer.lr / 10)
    assert ft.param_scheduler[0].end == \
        base.param_scheduler[0].end * 5 // 100
    assert ft.param_scheduler[-1].end == ft.train_cfg.max_iters
    # the converted released model (docs/reproduce.md)
    assert ft.load_from == f'checkpoints/{released}_mmapt.pth'
    assert ft.model.backbone.init_cfg is None
    ft_dict, base_dict = ft.to_dict(), base.to_dict()
    for key in ('load_from', 'optim_wrapper', 'param_scheduler', 'train_cfg',
                'default_hooks', 'model'):
        ft_dict.pop(key, None), base_dict.pop(key, None)
    assert ft_dict == base_dict


# --------------------------------------------------------------- running
def _tiny_apt_model_cfg():
    cfg = _load('configs/apt_upernet_ade20k.py')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.update(arch='tiny', init_cfg=None, drop_path_rate=0.1)
    model_cfg.neck.embed_dim = 192
    model_cfg.decode_head.update(in_channels=[192] * 4, channels=32)
    model_cfg.auxiliary_head.update(in_channels=192, channels=16)
    return cfg, model_cfg


def _batch(images, with_gt=True):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for img in images:
        h, w = img.shape[-2:]
        sample = SegDataSample(
            metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        if with_gt:
            gt = torch.randint(0, 150, (1, h, w))
            gt[:, :8] = 255  # ignored pixels
            sample.gt_sem_seg = PixelData(data=gt)
        samples.append(sample)
    return dict(inputs=list(images), data_samples=samples)


def test_apt_upernet_train_step_and_slide_inference_cpu():
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    cfg, model_cfg = _tiny_apt_model_cfg()
    model = _build_model(model_cfg)
    model.init_weights()
    assert type(model.backbone).__name__ == 'APTEVA02'

    # ---- one training step with the config's optimizer (layer decay)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    lrs = {g['lr'] for g in optim_wrapper.optimizer.param_groups}
    assert max(lrs) == pytest.approx(6e-5) and min(lrs) < 6e-5
    # 256 x 256 training crops keep the step quick on a CPU (the padding
    # size follows); inference below uses the config's 512 windows.
    model.data_preprocessor.size = (256, 256)
    images = [
        torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8)
        for _ in range(2)
    ]
    # half of the second image is flat: APT must merge patches there
    images[1][:, :128] = 128
    model.train()
    head_weight = model.decode_head.conv_seg.weight.detach().clone()
    with count_tokens(model.backbone) as counter:
        losses = model.train_step(_batch(images), optim_wrapper)
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert not torch.equal(head_weight, model.decode_head.conv_seg.weight)
    stats = counter.per_image()
    assert stats['tokens'][0] == stats['baseline_tokens'][0] == 16 * 16
    assert stats['tokens'][1] < stats['baseline_tokens'][1]

    # ---- slide inference on a non-square image larger than one crop
    model.eval()
    image = torch.randint(0, 256, (3, 512, 683), dtype=torch.uint8)
    image[:, :, :300] = 200
    with torch.no_grad(), count_tokens(model.backbone) as counter:
        results = model.test_step(_batch([image], with_gt=False))
    assert results[0].pred_sem_seg.data.shape == (1, 512, 683)
    assert results[0].seg_logits.data.shape == (150, 512, 683)
    # two 512 x 512 windows (x = 0 and 171), each tokenised on its own
    assert cfg.model.test_cfg.stride == (341, 341)
    # the tokens of both windows are counted, summed for the image
    stats = counter.per_image()
    assert stats['calls'] == 2
    assert stats['baseline_tokens'].tolist() == [2 * 32 * 32]
    assert stats['tokens'][0] < 2 * 32 * 32


def test_finetune_loads_a_baseline_segmentor_state_dict():
    """apt_upernet_ade20k_finetune.py starts from a trained baseline
    segmentor: every weight but the zero-initialised APT aggregation must
    come from the baseline checkpoint."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    _, apt_cfg = _tiny_apt_model_cfg()
    base_cfg = copy.deepcopy(apt_cfg)
    base_cfg.backbone.type = 'EVA02'
    for key in ('thresholds', 'patch_sizes', 'entropy_bins', 'mean', 'std'):
        base_cfg.backbone.pop(key)
    baseline = _build_model(base_cfg)
    apt = _build_model(apt_cfg)
    checkpoint = dict(state_dict=baseline.state_dict())
    _load_checkpoint_to_model(apt, checkpoint, strict=False)
    apt_state, base_state = apt.state_dict(), baseline.state_dict()
    missing = sorted(set(apt_state) - set(base_state))
    assert missing and all(
        k.startswith('backbone.apt_embed.') for k in missing)
    assert not set(base_state) - set(apt_state)
    for key, value in base_state.items():
        assert torch.equal(apt_state[key], value), key


def test_apt_refuses_inputs_not_a_multiple_of_the_largest_patch():
    """A crop or padding that is a multiple of 16 but not of 32 (e.g. a
    wrongly edited crop_size) fails with the fix in the message."""
    _, model_cfg = _tiny_apt_model_cfg()
    model = _build_model(model_cfg).eval()
    with torch.no_grad():
        model.backbone(torch.zeros(1, 3, 256, 256))
        with pytest.raises(ValueError, match='size_divisor=32'):
            model.backbone(torch.zeros(1, 3, 240, 256))
