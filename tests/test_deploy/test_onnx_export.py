"""ONNX export of the static-shape APT backbone, run in onnxruntime."""
import numpy as np
import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.models import APTEVA02, EVA02

ort = pytest.importorskip(
    'onnxruntime',
    reason='onnxruntime is not installed (pip install '
    'onnx onnxscript onnxruntime)')

CFG = dict(
    arch=dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False),
    thresholds=(2, 2),
    img_size=256,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1))


def test_static_apt_eva02_runs_in_onnxruntime(tmp_path):
    from mmapt.deploy import export_onnx
    torch.manual_seed(0)
    model = APTEVA02(pack_size=256, **CFG).eval()
    first = flat_and_noise_images(1, 256, 256, (128, 128), 0)
    second = flat_and_noise_images(1, 256, 256, (64, 192), 1)
    assert model.tokenize(first).num_tokens != \
        model.tokenize(second).num_tokens
    path = export_onnx(model, first, str(tmp_path / 'apt.onnx'))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    for x in (first, second):
        with torch.no_grad():
            want = model(x)
        got = session.run(None, {name: x.numpy()})
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.shape == tuple(b.shape)
            np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-4)


def test_stable_sort_translation_keeps_ties_in_order(tmp_path):
    """StaticPlan's stable argsort of group lengths (many ties) becomes
    ONNX TopK; ties must keep index order, ascending and descending."""
    from mmapt.deploy import export_onnx

    class Sorts(torch.nn.Module):

        def forward(self, lengths):
            return (torch.argsort(lengths, descending=True, stable=True),
                    torch.sort(lengths, stable=True)[1])

    make = torch.Generator().manual_seed(0)
    example = torch.randint(0, 4, (300, ), generator=make)
    path = export_onnx(Sorts(), example, str(tmp_path / 'sort.onnx'))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for _ in range(5):
        lengths = torch.randint(0, 4, (300, ), generator=make)
        got = session.run(None,
                          {session.get_inputs()[0].name: lengths.numpy()})
        for a, b in zip(got, Sorts()(lengths)):
            np.testing.assert_array_equal(a, b.numpy())


def test_plain_eva02_runs_in_onnxruntime(tmp_path):
    from mmapt.deploy import export_onnx
    torch.manual_seed(0)
    plain = {k: v for k, v in CFG.items() if k != 'thresholds'}
    model = EVA02(**plain).eval()
    x = torch.randn(1, 3, 256, 256)
    path = export_onnx(model, x, str(tmp_path / 'eva02.onnx'))
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    with torch.no_grad():
        want = model(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-4)


def test_exact_packing_is_refused(tmp_path):
    from mmapt.deploy import export_onnx
    model = APTEVA02(**CFG).eval()
    with pytest.raises(ValueError, match='pack_size'):
        export_onnx(model, torch.zeros(1, 3, 256, 256),
                    str(tmp_path / 'x.onnx'))
