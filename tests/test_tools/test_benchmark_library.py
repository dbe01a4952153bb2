"""mmapt.benchmark (the benchmark tools' library) and the backbone benchmark
tool's --count-overhead mode: orders, summaries, stage clocks and counts
that could be wrong, on tiny inputs (no mmdet needed)."""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from conftest import ROOT, marked_module

from mmapt.benchmark import (Arm, backbone_bench, bucket_size, interleaved,
                             ratio)
from mmapt.benchmark.cuda import profile_forward
from mmapt.benchmark.report import gpu_markdown
from mmapt.benchmark.timing import StageClock, StageTimer, module_stage
from mmapt.models import APTEVA02, EVA02
from mmapt.models.stages import forward_stage

TINY = dict(embed_dims=64, num_layers=2, num_heads=1)
OWNER = marked_module()


def test_interleaved_rotates_the_first_arm():
    order = [(rep, item, arm)
             for rep, item, arm in interleaved('AB', [0, 1], 3)]
    assert order == [(0, 0, 'A'), (0, 0, 'B'), (0, 1, 'A'), (0, 1, 'B'),
                     (1, 0, 'B'), (1, 0, 'A'), (1, 1, 'B'), (1, 1, 'A'),
                     (2, 0, 'A'), (2, 0, 'B'), (2, 1, 'A'), (2, 1, 'B')]


def test_arm_record_sums_per_item_medians():
    record = Arm('x')
    for ms in (10., 30., 20.):
        record.add('a', model_ms=ms)
    record.add('b', model_ms=5.)
    record.set_tokens('a', 100, 256)
    record.set_tokens('b', 50, 256)
    assert record.medians() == {'a': {'model_ms': 20.}, 'b': {'model_ms': 5.}}
    assert record.total() == 25. and record.img_s() == pytest.approx(80.)
    assert record.median() == 12.5
    assert record.total_tokens() == 150
    assert record.total_baseline_tokens() == 512
    assert ratio(30., 20.) == 1.5 and ratio(1., None) is None
    assert ratio(1., 0.) is None


def test_bucket_size_rounds_up_but_not_past_the_square_canvas():
    assert bucket_size(1000, 1024) == 1024
    assert bucket_size(1024, 1024) == 1024
    assert bucket_size(1025, 1024) == 2048
    assert bucket_size(8500, 1024, ceiling=9000) == 9000  # not 9216
    assert bucket_size(8100, 1024, ceiling=9216) == 8192
    with pytest.raises(ValueError, match='multiple'):
        bucket_size(10, 0)


class FakeClock:
    """A clock that advances one second per read: stage times are counts
    of the reads inside each stage."""

    def __init__(self):
        self.now = 0.

    def __call__(self):
        self.now += 1.
        return self.now


def marked_work():
    with forward_stage(OWNER, 'tokenizer'):
        pass
    with forward_stage(OWNER, 'blocks'):
        with forward_stage(OWNER, 'unpack'):
            pass


@pytest.mark.parametrize('kind', ['timer', 'clock'])
def test_stage_times_are_exclusive(kind):
    clock = FakeClock()
    cpu = torch.device('cpu')
    if kind == 'timer':
        timer = StageTimer(cpu, clock)
        with timer.listen(OWNER):
            marked_work()
        times = timer.reset()
    else:
        stage_clock = StageClock(cpu, clock)
        with stage_clock.listen(OWNER):
            marked_work()
        times = stage_clock.result()
    # Reads: tokenizer in/out = 1 s; blocks in, unpack in, unpack out,
    # blocks out = 3 s of which unpack holds 1 s.
    assert times == {'tokenizer': 1000., 'unpack': 1000., 'blocks': 2000.}


def test_profile_forward_has_a_row_per_stage():
    x = torch.randn(64, 64)

    def work():
        with forward_stage(OWNER, 'tokenizer'):
            x.mm(x)
        with forward_stage(OWNER, 'blocks'):
            x.mm(x).relu()

    prof = profile_forward(work, torch.device('cpu'), OWNER)
    assert set(prof['stages']) == {'tokenizer', 'blocks'}
    assert prof['forward_ms'] > 0 and prof['gpu_idle_ms'] is None
    assert 'aten::mm' in prof['table']


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        name[:-3], osp.join(ROOT, 'tools', 'analysis', name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_backbone_tool(monkeypatch, capsys, *extra):
    tool = load_tool('benchmark.py')
    monkeypatch.setitem(backbone_bench.BACKBONES['eva02'], 'classes',
                        (lambda arch, **kw: EVA02(arch=TINY, **kw),
                         lambda arch, **kw: APTEVA02(arch=TINY, **kw)))
    tool.main([
        '--backbone-only', '--canvas', '256', '--patch-sizes', '16', '32',
        '64', '--thresholds', '2', '2', '--window-size', '8',
        '--global-attn-indexes', '1', '--repeat', '1', '--num-generated', '2',
        '--no-memory', '--json', *extra
    ])
    out = capsys.readouterr().out.strip().splitlines()
    return out, json.loads(out[-1])


def test_count_overhead_mode(monkeypatch, capsys):
    lines, result = run_backbone_tool(monkeypatch, capsys, '--count-overhead')
    assert set(result['overhead']) == {'generated_0', 'generated_1'}
    for counts in result['overhead'].values():
        plain, apt = counts['plain'], counts['apt']
        # The plain model reads no device value; its stages are marked.
        assert plain['total_syncs'] == 0 and plain['sync_sites'] == []
        assert set(plain['ops']) == {'embedding', 'blocks', 'unpack'}
        assert plain['total_ops'] == sum(plain['ops'].values())
        assert plain['outside_blocks'] == \
            plain['total_ops'] - plain['ops']['blocks']
        # APT's own stages dispatch ops of their own.
        assert apt['ops']['tokenizer'] > 0 and apt['ops']['context'] > 0
        assert apt['outside_blocks'] > plain['outside_blocks']
        assert apt['total_syncs'] == len(apt['sync_sites'])
    assert any('plain' in line and 'generated_0' in line for line in lines)


def test_timing_mode_reports_the_tokenizer_share(monkeypatch, capsys):
    _, result = run_backbone_tool(monkeypatch, capsys)
    assert 0 < result['tokenizer_share'] < 1
    assert result['tokenizer_share'] < result['outside_blocks_share'] < 1
    overhead = result['overhead_ms']
    assert overhead['tokenizer_ms'] > 0 and overhead['plain_embed_ms'] > 0


def test_timing_mode_times_the_static_arm(monkeypatch, capsys):
    lines, result = run_backbone_tool(monkeypatch, capsys, '--bucket', '64')
    per_image = result['per_image_static']
    assert set(per_image) == {'generated_0', 'generated_1'}
    for row in per_image.values():
        # Packed lengths rounded up to 64, at most the 16 x 16 grid.
        assert row['pack_size'] % 64 == 0 and row['pack_size'] <= 256
        assert row['static_ms'] > 0
    # Ratios of the reported sums (rounded to 4 digits).
    assert result['static_speedup'] == pytest.approx(
        result['baseline_ms'] / result['static_ms'], rel=1e-3, abs=1e-4)
    assert result['static_vs_exact'] == pytest.approx(
        result['static_ms'] / result['apt_ms'], rel=1e-3, abs=1e-4)
    # Two blocks per forward, one warm-up forward per image, on CPU.
    assert result['static_kernels'] == {'static_sdpa': 4}
    assert any(line.startswith('static mode (--bucket 64') for line in lines)


def test_gpu_markdown_lists_arms_skips_and_failures():
    arm = dict(
        img_s=2.,
        median_ms=500.,
        tokens=100,
        keep_ratio=0.5,
        total_ms=1000.,
        peak_mib=1.)
    report = dict(
        environment=dict(device='cpu', torch='x', git_commit='abc'),
        settings=dict(dtype='bf16', canvas=256, images=[{}], repeat=1),
        archs=dict(
            quick=dict(
                attention_path='cpu',
                summary=dict(fastest_plain='plain_square'),
                arms=dict(
                    plain_square=dict(arm, total_ms=1500.), apt_square=arm),
                skipped=dict(apt_static_graph='needs CUDA'),
                failed=dict(apt_static='RuntimeError: boom'))))
    text = gpu_markdown(report)
    assert '| apt_square | 2.00 | 500.00 | 100 | 0.500 | 1.500x |' in text
    assert 'skipped `apt_static_graph`: needs CUDA' in text
    assert '**failed** `apt_static`: RuntimeError: boom' in text


def test_stage_timer_attach_times_module_forwards_through_hooks():
    """Module stages are timed by forward hooks, exclusively, also when the
    forward raises; the hooks are gone afterwards (nothing patched)."""
    inner = torch.nn.Linear(2, 2)
    outer = torch.nn.Sequential(inner)
    clock = FakeClock()
    timer = StageTimer(torch.device('cpu'), clock)
    with timer.attach([
            module_stage('outer', outer),
            module_stage('inner', inner),
            module_stage('missing', None)
    ]):
        outer(torch.ones(1, 2))
        with pytest.raises(RuntimeError):
            inner(torch.ones(1, 3))
    # outer: in, (inner in, inner out), out = 3 s, 1 of them inner's.
    assert timer.reset() == {'outer': 2000., 'inner': 2000.}
    assert not inner._forward_hooks and not inner._forward_pre_hooks
    assert 'forward' not in inner.__dict__
    with pytest.raises(TypeError, match='times module forwards'):
        with timer.attach([('f', object())]):
            pass


def test_one_dtype_table_and_one_command_line():
    from mmapt.benchmark import amp_check, pipeline
    from mmapt.engine.precision import precision_dtype
    assert precision_dtype('fp32') is None  # no autocast
    assert precision_dtype('bf16') is torch.bfloat16
    assert precision_dtype('fp16') is torch.float16
    with pytest.raises(ValueError, match='autocast dtype'):
        precision_dtype('fp8')
    tool = load_tool('benchmark.py')
    args = tool.parse_args(['--check-amp', '--device', 'cpu'])
    assert args.mode is amp_check and args.device == 'cpu'
    args = tool.parse_args(['--canvas', '256', '--backbone-only'])
    assert args.mode is backbone_bench and args.argv == ['--canvas', '256']
    assert args.patch_sizes == [16, 32, 64, 128]  # the family's defaults
    args = tool.parse_args(['a.py', '--compare', 'b.py', '--images', 'x'])
    assert args.mode is pipeline and args.dtype == 'fp32'
