"""Smoke test of the pinned OpenMMLab stack on CPU."""
import os

import pytest
import torch


def test_mmcv_ops_run_on_cpu():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]],
                         dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float32)
    out = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)(feats, rois)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] < out[0, 0, 1, 1]


def _packaged_config(package: str, relative: str):
    from mmengine.config import Config
    module = __import__(package)
    path = os.path.join(
        os.path.dirname(module.__file__), '.mim', 'configs', relative)
    return Config.fromfile(path)


def test_mmdet_packaged_model_forward():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = _packaged_config('mmdet', 'retinanet/retinanet_r18_fpn_1x_coco.py')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 128), mode='tensor')
    cls_scores, _ = outs
    assert len(cls_scores) == 5 and cls_scores[0].shape[-2:] == (16, 16)


def test_mmseg_packaged_model_forward():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = _packaged_config('mmseg',
                           'fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py')
    cfg.model.backbone.init_cfg = None
    cfg.model.pretrained = None
    # SyncBN needs a process group; plain BN runs anywhere.
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.auxiliary_head.norm_cfg = dict(type='BN', requires_grad=True)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 19, 8, 8)


def test_import_mmapt_registers_modules():
    from mmengine.registry import MODELS

    import mmapt
    assert mmapt.__version__
    for name in ('EVA02', 'APTEVA02'):
        if MODELS.get(name) is None:
            pytest.fail(f'{name} is not registered by `import mmapt`')
