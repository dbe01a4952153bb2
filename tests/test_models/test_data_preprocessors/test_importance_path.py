"""Per-image importance maps reach the APT backbone through mmdet's and
mmseg's own machinery: pipeline transform -> data sample ->
APTDataPreprocessor (4th input channel) -> extract_feat / test_step."""
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from mmapt.models import APTEVA02
from mmapt.models.backbones import count_tokens
from mmapt.models.data_preprocessors import pack_apt_inputs, split_apt_inputs


def _textured(height, width, sigma, seed=0):
    rng = np.random.default_rng(seed)
    image = 120 + sigma * rng.standard_normal((height, width, 1))
    return np.repeat(image.clip(0, 255).astype(np.uint8), 3, axis=2)


# ------------------------------------------------ backbone-level contract
def test_backbone_takes_maps_as_argument_or_fourth_channel():
    torch.manual_seed(0)
    backbone = APTEVA02(
        arch=dict(embed_dims=32, num_layers=1, num_heads=1, scale_mlp=True),
        img_size=128,
        thresholds=(2, 2),
        token_budget=20,
        scorer=dict(type='importance', base='contrast')).eval()
    x = torch.randn(2, 3, 128, 192)
    importance = torch.rand(2, 128, 192)
    packed = pack_apt_inputs(x, importance)
    assert packed.shape == (2, 4, 128, 192)
    with torch.no_grad():
        a = backbone(x, importance=importance)
        b = backbone(packed)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    # 2 x 3 patches of 64 px + 4 splits: 18 tokens, the most <= 20.
    assert backbone.tokenize(packed).tokens_per_image.tolist() == [18, 18]
    images, maps = split_apt_inputs(packed)
    assert torch.equal(images, x) and torch.equal(maps, importance)
    with pytest.raises(ValueError, match='given twice'):
        backbone(packed, importance=importance)
    with pytest.raises(ValueError, match='do not match the images'):
        pack_apt_inputs(x, importance[:, :64])


# ------------------------------------------------------------------ mmdet
@pytest.fixture
def det_image(tmp_path):
    """A 200 x 240 textured image; box = the object of interest."""
    path = tmp_path / 'det.png'
    Image.fromarray(_textured(200, 240, 12)).save(path)
    box = [40.0, 30.0, 120.0, 110.0]
    return str(path), box


def _det_results(path, box):
    x1, y1, x2, y2 = box
    return dict(
        img_path=path,
        img_id=0,
        instances=[
            dict(
                bbox=box,
                bbox_label=0,
                ignore_flag=0,
                mask=[[x1, y1, x2, y1, x2, y2, x1, y2]])
        ])


def test_detector_forward_with_box_importance(det_image):
    pytest.importorskip('mmdet')
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData

    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/toy/toy_apt_importance_det.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.registry import MODELS
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).eval()
        assert type(model.data_preprocessor).__name__ == \
            'APTDataPreprocessor'
        # The wrapped preprocessor's settings read through the wrapper.
        assert model.data_preprocessor.pad_size_divisor == 256
        packed = Compose(cfg.test_dataloader.dataset.pipeline)(
            _det_results(*det_image))
        sample = packed['data_samples']
        assert isinstance(sample.importance_map, PixelData)
        # Resized 200 x 240 -> 213 x 256; the box scaled likewise.
        scale = 256 / 240
        importance = sample.importance_map.data[0]
        assert tuple(importance.shape) == tuple(sample.img_shape) == (213, 256)
        assert importance[int(31 * scale), int(41 * scale)] == 1.0
        assert importance[150, 200] == 0.0

        data = model.data_preprocessor(pseudo_collate([packed]), False)
        inputs = data['inputs']
        assert inputs.shape == (1, 4, 256, 256)  # padded to the canvas
        assert torch.equal(inputs[0, 3, :213], importance)
        assert bool((inputs[0, 3, 213:] == 0).all())

        with torch.no_grad(), count_tokens(model.backbone) as counter:
            feats = model.extract_feat(inputs)
        assert len(feats) == 5  # SimpleFPN: 4 levels + the extra pooled one
        # keep_ratio 0.5 of the 16 x 16 grid: 128 tokens (within 3).
        assert 125 < int(counter.calls[0][0].sum()) <= 128

        # The map decides where the tokens go: finer inside the box.
        backbone = model.backbone
        with_map = backbone.tokenize(inputs)
        without = backbone.tokenize(inputs[:, :3],
                                    torch.zeros_like(inputs[:, 3]))
        box_cells = slice(int(30 * scale) // 16,
                          int(110 * scale) // 16), slice(
                              int(40 * scale) // 16,
                              int(120 * scale) // 16)

        def fine_in_box(layout):
            """Distinct tokens covering the box: more = finer there."""
            return layout.cell_to_token[0][box_cells].unique().numel()

        assert fine_in_box(with_map) > fine_in_box(without)

        # And the whole test step runs through mmdet's own path.
        with torch.no_grad():
            results = model.test_step(pseudo_collate([packed]))
        assert len(results) == 1 and 'pred_instances' in results[0]


def test_detector_without_map_fails_clearly(det_image):
    pytest.importorskip('mmdet')
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/toy/toy_apt_importance_det.py'))
    pipeline = [
        t for t in cfg.test_dataloader.dataset.pipeline
        if t['type'] != 'BoxImportanceMap'
    ]
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model).eval()
        packed = Compose(pipeline)(_det_results(*det_image))
        with pytest.raises(
                ValueError,
                match='has no importance_map: add an '
                'importance transform'):
            model.data_preprocessor(pseudo_collate([packed]), False)


# ------------------------------------------------------------------ mmseg
def _seg_cfg(folder):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs/toy/toy_apt_seg.py'))
    cfg.model.data_preprocessor.type = 'APTDataPreprocessor'
    cfg.model.data_preprocessor.wraps = 'SegDataPreProcessor'
    cfg.model.backbone.scorer = dict(type='importance', alpha=1.0)
    pipeline = list(cfg.test_dataloader.dataset.pipeline)
    pipeline.append(dict(type='LoadImportanceMap', folder=str(folder)))
    return cfg, pipeline


def test_segmentor_slide_inference_with_loaded_maps(tmp_path):
    pytest.importorskip('mmseg')
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import DefaultScope

    # 200 x 400, faint texture (entropy below 5.75: 32-px patches merge);
    # importance 1 on the left quarter.
    image = tmp_path / 'seg.jpg'
    Image.fromarray(_textured(200, 400, 2.5)).save(image, quality=100)
    label = tmp_path / 'seg.png'
    Image.fromarray(np.ones((200, 400), np.uint8)).save(label)
    maps = tmp_path / 'maps'
    maps.mkdir()
    left = np.zeros((200, 400), np.float32)
    left[:, :100] = 1.0
    np.save(maps / 'seg.npy', left)
    cfg, pipeline = _seg_cfg(maps)

    with DefaultScope.overwrite_default_scope('mmseg'):
        from mmseg.registry import MODELS
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).eval()
        results = dict(
            img_path=str(image),
            seg_map_path=str(label),
            reduce_zero_label=True,
            seg_fields=[])
        packed = Compose(pipeline)(results)
        importance = packed['data_samples'].importance_map.data[0]
        # Resized 200 x 400 -> 256 x 512, the map with it.
        assert tuple(importance.shape) == (256, 512)
        assert importance[:, :120].min() > 0.99
        assert importance[:, 136:].max() < 0.01

        batch = pseudo_collate([packed])
        with torch.no_grad(), count_tokens(model.backbone) as counter:
            out = model.test_step(batch)
        # Slide inference: 3 crops of 256 x 256, each with its slice of
        # the map (the crops at x = 171 and 256 see none of it).
        tokens = [int(t.sum()) for t, _ in counter.calls]
        assert len(tokens) == 3
        assert out[0].seg_logits.data.shape == (6, 200, 400)
        np.save(maps / 'seg.npy', np.zeros_like(left))
        packed = Compose(pipeline)(
            dict(
                img_path=str(image),
                seg_map_path=str(label),
                reduce_zero_label=True,
                seg_fields=[]))
        with torch.no_grad(), count_tokens(model.backbone) as neutral:
            model.test_step(pseudo_collate([packed]))
        base = [int(t.sum()) for t, _ in neutral.calls]
        assert tokens[0] > base[0]  # the crop with the important quarter
        assert tokens[1:] == base[1:]
