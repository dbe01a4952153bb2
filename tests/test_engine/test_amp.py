"""Mixed precision: EVA02 / APTEVA02 under CPU bf16 autocast (train and
eval), the test loop's precision options, and the dtype seen by attention.

Tolerance. bf16 keeps 8 significant bits: each matmul input is rounded with
relative error <= 2**-9 (0.2%). Products are accumulated in fp32, and the
roundings of the ~6 matmuls per block add up roughly in quadrature through
the residual stream (kept fp32, as in the dense model). Four blocks measure
about 0.3% relative (Frobenius) error here; 2% (10 roundings' worth) bounds
that with margin, while a lost position table, a wrong merge decision or a
packed-order mix-up all give errors of 10% and more.
"""
from collections import Counter

import pytest
import torch
from conftest import ROOT

import mmapt.models.layers.context as packed_context
from mmapt.engine.precision import resolve_amp_dtype
from mmapt.models import APTEVA02, EVA02
from mmapt.models.backbones import count_tokens

BF16_REL_TOL = 2e-2
ARCH = dict(embed_dims=64, num_layers=4, num_heads=2)


def _rel_err(got, want):
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def _images(batch=2, size=128):
    """Noise with a flat band on top: APT merges the band, not the rest."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    x[:, :, :size // 2] = 0.3
    return x


def _apt():
    torch.manual_seed(0)
    model = APTEVA02(
        arch=ARCH,
        img_size=128,
        window_size=4,
        global_attn_indexes=(1, 3),
        out_indices=(1, 3),
        thresholds=(2.0, 2.0))
    # Trained-like APT layers (zero init would hide the aggregation branch).
    with torch.no_grad():
        model.apt_embed.zero_linear.weight.normal_(std=0.05)
    return model


@pytest.fixture
def attention_dtypes(monkeypatch):
    """Dtypes of q, k, v reaching the packed attention, per call."""
    seen = Counter()
    original = packed_context.varlen_attention

    def spy(q, k, v, *args, **kwargs):
        seen[(q.dtype, k.dtype, v.dtype)] += 1
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(packed_context, 'varlen_attention', spy)
    return seen


@pytest.mark.parametrize('training', [True, False])
def test_apt_bf16_autocast_matches_fp32(training, attention_dtypes):
    model = _apt().train(training)
    x = _images()
    with count_tokens(model) as ref_count:
        ref = model(x)
    ref_loss = sum(o.pow(2).mean() for o in ref)
    if training:
        ref_loss.backward()
        ref_grad = model.apt_embed.zero_linear.weight.grad.clone()
        model.zero_grad()
    attention_dtypes.clear()

    with count_tokens(model) as count, \
            torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
        loss = sum(o.pow(2).mean() for o in outs)
    # Same layout: the tokenizer is not affected by autocast.
    assert torch.equal(count.per_image()['tokens'],
                       ref_count.per_image()['tokens'])
    assert count.per_image()['keep_ratio'].max() < 1
    # Every block's attention ran in bf16: the packed q/k/v were not
    # upcast. The residual stream is fp32, exactly as in the dense EVA02
    # (bf16 embedding + fp32 position table promotes), so are the maps.
    assert attention_dtypes == {(torch.bfloat16, ) * 3: ARCH['num_layers']}
    for out, want in zip(outs, ref):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert _rel_err(out, want) < BF16_REL_TOL
    if training:
        loss.backward()
        grads = {n: p.grad for n, p in model.apt_embed.named_parameters()}
        assert all(
            g is not None and torch.isfinite(g).all() for g in grads.values())
        assert all(g.abs().sum() > 0 for g in grads.values())
        assert _rel_err(grads['zero_linear.weight'], ref_grad) < 5e-2


def test_dense_eva02_bf16_autocast_and_dtype_parity_with_apt():
    """Dense and packed paths produce the same dtypes under autocast."""
    torch.manual_seed(0)
    plain = EVA02(
        arch=ARCH,
        img_size=128,
        window_size=4,
        global_attn_indexes=(1, 3),
        out_indices=(1, 3))
    apt = _apt()
    x = _images()
    ref = plain(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = plain(x)
        apt_outs = apt(x)
    sum(o.pow(2).mean() for o in outs).backward()
    assert plain.blocks[0].attn.qkv.weight.grad is not None
    for out, want, apt_out in zip(outs, ref, apt_outs):
        assert out.dtype == apt_out.dtype
        assert torch.isfinite(out).all()
        assert _rel_err(out, want) < BF16_REL_TOL


def test_resolve_amp_dtype():
    assert resolve_amp_dtype(None, 'cuda') is torch.float16
    assert resolve_amp_dtype(None, 'cpu') is torch.bfloat16
    assert resolve_amp_dtype('bf16', 'cuda') is torch.bfloat16
    assert resolve_amp_dtype(torch.float16, 'cpu') is torch.float16
    with pytest.raises(ValueError, match='fp16'):
        resolve_amp_dtype('fp8', 'cuda')
    with pytest.raises(ValueError, match='float16 or bfloat16'):
        resolve_amp_dtype(torch.float64, 'cuda')


def test_autocast_model_features_scope():
    """'features': extract_feat in bf16, handed back as fp32; the method is
    restored afterwards."""
    from mmapt.engine.amp import autocast_model

    class Model(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 2)
            self.inner_dtypes = []

        def extract_feat(self, x):
            y = self.backbone(x)
            self.inner_dtypes.append(y.dtype)
            return (y, )

        def forward(self, x):
            feats = self.extract_feat(x)
            self.inner_dtypes.append(feats[0].dtype)
            return self.head(feats[0])

    model = Model()
    with autocast_model(model, 'cpu', 'bf16'):
        out = model(torch.randn(2, 4))
    assert model.inner_dtypes == [torch.bfloat16, torch.float32]
    assert out.dtype == torch.float32  # the head ran outside autocast
    assert 'extract_feat' not in vars(model)
    with pytest.raises(ValueError, match='scope'):
        autocast_model(model, 'cpu', 'bf16', scope='heads')
    with pytest.raises(TypeError, match='extract_feat'):
        with autocast_model(torch.nn.Linear(2, 2), 'cpu'):
            pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_apt_cuda_autocast_reaches_flash_varlen(dtype, monkeypatch):
    """On CUDA the packed attention gets fp16/bf16 q, k, v and so runs
    torch's flash varlen kernel (when this torch build has it), forward and
    backward; outputs agree with fp32 (fp16: 11 bits, tighter than bf16)."""
    import mmapt.models.layers.attention as attention
    calls = Counter()
    kernel = attention._torch_varlen_attn
    if kernel is not None:

        def counted(*args, **kwargs):
            calls['flash'] += 1
            return kernel(*args, **kwargs)

        monkeypatch.setattr(attention, '_torch_varlen_attn', counted)
    model = _apt().cuda().train()
    x = _images().cuda()
    ref = [o.detach() for o in model(x)]
    with torch.autocast('cuda', dtype=dtype), \
            attention.count_attention_calls(model) as counts:
        outs = model(x)
        loss = sum(o.float().pow(2).mean() for o in outs)
    loss.backward()
    for out, want in zip(outs, ref):
        assert torch.isfinite(out).all()
        assert _rel_err(out, want) < BF16_REL_TOL
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        and p.grad.abs().sum() > 0 for p in model.apt_embed.parameters())
    if kernel is not None:
        # Every layer tried the kernel; a call it refused ran the padded
        # plan and was counted as such (never silently).
        assert calls['flash'] == ARCH['num_layers']
        assert counts['varlen'] + counts['varlen_failed'] == ARCH['num_layers']
        assert counts['padded'] == counts['varlen_failed']


def test_amp_test_loop_in_a_runner(tmp_path):
    """test_cfg=dict(type='AmpTestLoop', ...) through mmengine's Runner:
    'features' autocasts extract_feat only, 'model' all of test_step."""
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import METRICS
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    import mmapt.engine  # noqa: F401  (registers the loops)

    class Data(Dataset):

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return dict(inputs=torch.full((4, ), float(i)))

    class Model(BaseModel):

        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(4, 4)
            self.head = torch.nn.Linear(4, 1)

        def extract_feat(self, x):
            y = self.backbone(x)
            self.inner = y.dtype
            return y

        def forward(self, inputs, data_samples=None, mode='tensor'):
            x = torch.stack(inputs) if isinstance(inputs, list) else inputs
            feat = self.extract_feat(x)
            out = self.head(feat)
            return [dict(inner=self.inner, feat=feat.dtype, out=out.dtype)
                    ] * len(x)

    @METRICS.register_module(force=True)
    class DtypeMetric(BaseMetric):

        def process(self, data_batch, data_samples):
            self.results.extend(data_samples)

        def compute_metrics(self, results):
            return {
                key: ' '.join(sorted({str(r[key])[6:]
                                      for r in results}))
                for key in ('inner', 'feat', 'out')
            }

    def run(test_cfg, name):
        runner = Runner(
            model=Model(),
            work_dir=str(tmp_path / name),
            test_dataloader=dict(
                dataset=Data(),
                sampler=dict(type='DefaultSampler', shuffle=False),
                batch_size=2,
                num_workers=0),
            test_cfg=test_cfg,
            test_evaluator=dict(type='DtypeMetric'),
            experiment_name=f'amp_loop_{name}',
            default_scope='mmengine')
        return runner.test(), runner.test_loop

    metrics, loop = run(dict(type='AmpTestLoop', dtype='bf16'), 'features')
    # backbone in bf16, handed to the head as fp32, head in fp32
    assert metrics == dict(inner='bfloat16', feat='float32', out='float32')
    assert loop.amp_used == 'cpu bfloat16 features'
    metrics, loop = run(dict(type='AmpTestLoop', scope='model'), 'model')
    assert metrics == dict(inner='bfloat16', feat='bfloat16', out='bfloat16')
    metrics, _ = run(dict(type='TestLoop'), 'fp32')
    assert metrics == dict(inner='float32', feat='float32', out='float32')
    with pytest.raises(ValueError, match='scope'):
        run(dict(type='AmpTestLoop', scope='heads'), 'bad')


def test_check_amp_tool_cpu(capsys):
    """benchmark.py --check-amp (check_amp.py's mode) end to end on a
    tiny CPU setting."""
    import importlib.util
    import json
    import os.path as osp
    path = osp.join(ROOT, 'tools', 'analysis', 'benchmark.py')
    spec = importlib.util.spec_from_file_location('benchmark', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    status = tool.main([
        '--check-amp', '--device', 'cpu', '--arch', 'tiny', '--canvas', '128',
        '--window-size', '8', '--global-attn-indexes', '11', '--dtypes',
        'bf16', '--repeat', '1', '--json'
    ])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status == 0
    assert 0 < result['keep_ratio'] < 1
    cases = {(c['model'], c['precision']): c for c in result['cases']}
    assert set(cases) == {('plain', 'fp32'), ('plain', 'bf16'),
                          ('apt', 'fp32'), ('apt', 'bf16')}
    assert cases[('apt', 'bf16')]['rel_err'] < BF16_REL_TOL
    assert cases[('apt', 'bf16')]['apt_grads_nonzero']
    assert cases[('apt', 'bf16')]['flash_varlen_calls'] == 0  # CPU
