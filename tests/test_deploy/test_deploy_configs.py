"""The other shape of an export: a whole APT segmentor in tensor mode
(logits out), equal to eager PyTorch in ONNX Runtime. (The plain detector,
one graph and no buckets, is tested in test_deploy_runtime.py beside the
APT one it is benchmarked against.)"""
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
