"""The other shapes of an export: a whole APT segmentor in tensor mode
(logits out) and a plain detector backbone + neck (one graph, no buckets),
each equal to eager PyTorch in ONNX Runtime."""
import numpy as np
import pytest
import torch
from test_deploy_runtime import photo, write_config

pytest.importorskip('onnxruntime', reason='pip install .[deploy]')
pytest.importorskip('skimage', reason='the sample photographs')

TINY_SEG = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=2),
        out_indices=(0, 1, 1, 1)),
    neck=dict(embed_dim=48),
    decode_head=dict(in_channels=[48, 48, 48, 48]),
    auxiliary_head=dict(in_channels=48))
"""
TINY_PLAIN_DET = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=48, num_layers=2, num_heads=2),
        global_attn_indexes=(1, )),
    neck=dict(backbone_channel=48, in_channels=[12, 24, 48, 48]))
"""


def test_apt_segmentor_exports_whole_in_tensor_mode(tmp_path):
    from mmengine.config import Config

    from mmapt.deploy import ONNXRuntimeModel, build_model, export_deployment
    config = write_config(tmp_path, TINY_SEG, 'configs/toy/toy_apt_seg.py')
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    grid_tokens = (256 // 16)**2
    manifest = export_deployment(
        cfg, str(tmp_path / 'onnx'), buckets=[grid_tokens], model=model)
    assert manifest['task'] == 'segmentation'
    assert manifest['input']['shape'] == [1, 3, 256, 256]  # the crop
    assert [o['name'] for o in manifest['outputs']] == ['seg_logits']
    runtime = ONNXRuntimeModel(str(tmp_path / 'onnx'), config=config)
    for name in ('camera.png', 'chelsea.png'):
        x = photo(name, manifest)
        result = runtime(x)
        assert result.pack_size == grid_tokens and not result.capped
        with torch.no_grad():
            want = model(torch.from_numpy(x), mode='tensor')  # exact packing
        assert result.outputs['seg_logits'].shape == (1, 6, 64, 64)
        np.testing.assert_allclose(
            result.outputs['seg_logits'], want.numpy(), rtol=0, atol=1e-4)


def test_plain_detector_exports_one_graph(tmp_path):
    from mmengine.config import Config

    from mmapt.deploy import ONNXRuntimeModel, build_model, export_deployment
    from mmapt.deploy.graphs import FeatureGraph
    config = write_config(tmp_path, TINY_PLAIN_DET,
                          'configs/toy/toy_eva02_det.py')
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    with pytest.raises(ValueError, match='plain backbone.*drop --bucket'):
        export_deployment(cfg, str(tmp_path / 'x'), buckets=[64], model=model)
    manifest = export_deployment(cfg, str(tmp_path / 'onnx'), model=model)
    assert [b['pack_size'] for b in manifest['buckets']] == [None]
    assert manifest['count_graph'] is None and not manifest['apt']
    runtime = ONNXRuntimeModel(str(tmp_path / 'onnx'))
    x = photo('coffee.png', manifest)
    result = runtime(x)
    assert result.pack_size is None and result.packed_tokens is None
    with torch.no_grad():
        want = FeatureGraph(model.backbone, model.neck)(torch.from_numpy(x))
    for got, ref in zip(result.outputs.values(), want):
        np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-4)
