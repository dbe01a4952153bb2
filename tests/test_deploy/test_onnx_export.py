"""ONNX export of backbones and of the aten ops the converter lacks, run
in onnxruntime. (The static-shape APT backbone + neck of a config, equal to
eager on photographs in every bucket and free of passes over the attention
scores, is tested on one shared export in test_deploy_runtime.py.)"""
import numpy as np
import pytest
import torch

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


def test_attention_translation_equals_torch(tmp_path):
    """scaled_dot_product_attention with a key mask (one group with no
    key at all: zeros, as torch), a full boolean mask, a float mask and no
    mask: ONNX Runtime equals torch."""
    import torch.nn.functional as F

    from mmapt.deploy.onnx_export import _translations

    class Attend(torch.nn.Module):

        def forward(self, q, k, v, key_mask, full_mask, bias):
            return (F.scaled_dot_product_attention(
                q, k, v, attn_mask=key_mask),
                    F.scaled_dot_product_attention(
                        q, k, v, attn_mask=full_mask),
                    F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                    F.scaled_dot_product_attention(q, k, v, scale=0.3))

    make = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 10, 8, generator=make) * 3 for _ in range(3))
    key_mask = torch.rand(3, 1, 1, 10, generator=make) > 0.4
    key_mask[0] = True
    key_mask[2] = False  # a padding group: no key
    full_mask = torch.rand(3, 1, 10, 10, generator=make) > 0.3
    bias = torch.randn(3, 2, 10, 10, generator=make)
    inputs = (q, k, v, key_mask, full_mask, bias)
    path = str(tmp_path / 'attend.onnx')
    torch.onnx.export(
        Attend(),
        inputs,
        path,
        dynamo=True,
        custom_translation_table=_translations())
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = session.run(None, {
        i.name: t.numpy()
        for i, t in zip(session.get_inputs(), inputs)
    })
    want = Attend()(*inputs)
    assert not want[0][2].any()  # torch: zeros for the group without keys
    for a, b in zip(got, want):
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
