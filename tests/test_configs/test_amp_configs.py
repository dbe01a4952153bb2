"""The detection and segmentation models of the APT configs (tiny arch
overrides) with backbone + neck under CPU bf16 autocast, forward and
backward. mmcv's CPU NMS and RoIAlign have no bf16 kernels, so the heads run
in fp32 (``autocast_model(..., scope='features')``, what ``tools/test.py
--amp`` does)."""
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.registry import init_default_scope  # noqa: E402

from mmapt.engine import autocast_model  # noqa: E402
from mmapt.models.backbones import count_tokens  # noqa: E402


def _record_dtypes(model):
    """dtypes of the backbone's outputs and of the neck's (transposed)
    convolutions' outputs."""
    seen = {'backbone': set(), 'neck_convs': set()}

    def hook(name):

        def record(module, args, out):
            outs = out if isinstance(out, (tuple, list)) else [out]
            seen[name].update(o.dtype for o in outs)

        return record

    model.backbone.register_forward_hook(hook('backbone'))
    for module in model.neck.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(hook('neck_convs'))
    return seen


def _check_backward(model, loss):
    loss.backward()
    apt = list(model.backbone.apt_embed.parameters())
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in apt)
    assert any(p.grad.abs().sum() > 0 for p in apt)
    neck = [p for p in model.neck.parameters() if p.requires_grad]
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in neck)


def test_apt_vitdet_bf16_features():
    from test_detection_configs import synthetic_batch, tiny_apt_detector_cfg
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(tiny_apt_detector_cfg().model)
    model.init_weights()
    with torch.no_grad():  # trained-like APT layers
        model.backbone.apt_embed.zero_linear.weight.normal_(std=0.02)
    model.train()
    seen = _record_dtypes(model)
    data = model.data_preprocessor(synthetic_batch(), True)
    with autocast_model(model, 'cpu', 'bf16'), \
            count_tokens(model.backbone) as counter:
        losses = model.loss(data['inputs'], data['data_samples'])
    assert counter.per_image()['keep_ratio'][0] < 0.8  # merged patches
    # Backbone maps fp32 (fp32 residual stream), neck convs in bf16 (its
    # LN2d norms return fp32, as autocast runs layer_norm).
    assert seen == {
        'backbone': {torch.float32},
        'neck_convs': {torch.bfloat16}
    }
    loss = sum(v.sum() for k, v in losses.items() if 'loss' in k
               for v in (v if isinstance(v, list) else [v]))
    assert torch.isfinite(loss)
    _check_backward(model, loss)


def test_apt_upernet_bf16_features():
    from test_segmentation_configs import _batch, _tiny_apt_model_cfg
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    _, model_cfg = _tiny_apt_model_cfg()
    model = MODELS.build(model_cfg)
    model.init_weights()
    with torch.no_grad():
        model.backbone.apt_embed.zero_linear.weight.normal_(std=0.02)
    model.data_preprocessor.size = (256, 256)
    # Two images: the PPM's batch norm needs more than one value at 1 x 1.
    images = [
        torch.randint(0, 256, (3, 256, 256), dtype=torch.uint8)
        for _ in range(2)
    ]
    images[0][:, :128] = 128  # flat half: merges
    model.train()
    seen = _record_dtypes(model)
    data = model.data_preprocessor(_batch(images), True)
    with autocast_model(model, 'cpu', 'bf16'):
        losses = model.loss(data['inputs'], data['data_samples'])
    assert seen == {
        'backbone': {torch.float32},
        'neck_convs': {torch.bfloat16}
    }
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    _check_backward(model, loss)
