"""The GPU benchmark's library parts that make a run trustworthy: the time
budget checked inside warm-ups, repeats and training; what each arm ran
(attention kernel, compile record); overhead counted per run; the report
written whole after every step."""
import json

import pytest
import torch
from torch import nn

from mmapt.benchmark.arm_checks import overhead_counts
from mmapt.benchmark.backbone_training import train_arms
from mmapt.benchmark.budget import Budget, OverBudget
from mmapt.benchmark.probes import CompileWatch, attention_probe
from mmapt.benchmark.report import write_report
from mmapt.benchmark.runner import (ArmOutcomes, BackboneArm, prepare_arms,
                                    time_arms)
from mmapt.models import APTEVA02

CPU = torch.device('cpu')


class Clock:
    """Seconds that pass only when a model runs (one per forward)."""

    def __init__(self) -> None:
        self.now = 0.

    def __call__(self) -> float:
        return self.now


class Ticking(nn.Module):
    """A tiny model whose every forward takes one second of ``clock``."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.linear = nn.Linear(3, 3)

    def forward(self, x):
        self.clock.now += 1
        return (self.linear(x.mean((2, 3))), )


def _arm(name, model, view='square'):
    return BackboneArm(
        name, model, view, lambda x: (lambda: model(x)), count_tokens=False)


def _inputs(images=2):
    x = torch.randn(1, 3, 4, 4)
    return {
        f'img{i}': dict(square=x, window=x, nopad=x)
        for i in range(images)
    }


def test_budget_names_where_it_ran_out():
    clock = Clock()
    budget = Budget(1.5, clock)
    budget.check('early')
    clock.now = 2
    assert budget.over()
    with pytest.raises(OverBudget, match=r'\(1.5 s\) while X, 2 s into'):
        budget.check('while X')
    assert not Budget(None, clock).over()
    with pytest.raises(ValueError, match='>= 0'):
        Budget(-1)


def test_prepare_arms_cuts_an_arm_inside_its_warm_up():
    clock = Clock()
    model = Ticking(clock)
    arms = [_arm('first', model), _arm('second', model), _arm('third', model)]
    outcomes, records, seen = ArmOutcomes(), {}, []
    # 2 images x 2 warm-ups = 4 s per arm: 'second' starts at 4 s and runs
    # out during its warm-up (5 s > 4.5 s); 'third' never starts.
    ready = prepare_arms(arms, _inputs(), 2, records, outcomes, CPU,
                         Budget(4.5, clock), seen.append)
    assert [a.name for a in ready] == ['first']
    assert 'while warming second up on img0' in outcomes.cut['second']
    assert 'before its warm-up' in outcomes.cut['third']
    assert seen == ['first', 'second', 'third']  # a write after each arm
    assert set(records) == {'first'}
    info = outcomes.info['first']
    assert info['peak_mib'] is None  # off CUDA: not measured, never 0
    assert info['attention']['kernel'] == 'none'  # no packed attention
    assert outcomes.unaccounted(['first', 'second', 'third', 'fourth'],
                                ['first']) == ['fourth']


def test_an_arm_that_needs_more_budget_than_is_left_does_not_start():
    clock = Clock()
    model = Ticking(clock)
    slow = _arm('compiled', model)
    slow.needs_s = 10.
    outcomes = ArmOutcomes()
    ready = prepare_arms([_arm('eager', model), slow], _inputs(1), 1, {},
                         outcomes, CPU, Budget(8, clock))
    assert [a.name for a in ready] == ['eager']
    assert outcomes.cut['compiled'].startswith(
        'not started: it needs about 10 s, 7 s of the time budget (8 s)')
    assert clock.now == 1  # the compiled arm never ran


def test_prepare_arms_records_failures_and_the_apt_kernel():
    apt = APTEVA02(
        arch=dict(embed_dims=32, num_layers=2, num_heads=1),
        img_size=128,
        thresholds=(2., 2., 0.3)).eval()

    def broken():
        raise RuntimeError('boom')

    arms = [
        BackboneArm('apt', apt, 'square', lambda x: (lambda: apt(x))),
        BackboneArm('broken', apt, 'square', lambda x: broken)
    ]
    outcomes, records = ArmOutcomes(), {}
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ready = prepare_arms(arms, {'a': dict(square=x)}, 1, records, outcomes,
                             CPU)
    assert [a.name for a in ready] == ['apt']
    assert outcomes.failed == {'broken': 'RuntimeError: boom'}
    attention = outcomes.info['apt']['attention']
    # One forward of a 2-block APT model: one packed call per block, on the
    # padded plan (no varlen kernel off CUDA), none refused.
    assert attention['kernel'] == 'padded'
    assert attention['calls']['padded'] == 2
    assert attention['varlen_failed'] == 0 and attention['errors'] == []
    assert records['apt'].tokens['a'][0] > 0


def test_time_arms_stops_after_a_whole_repeat_once_over_budget():
    clock = Clock()
    model = Ticking(clock)
    arms = [_arm('a', model), _arm('b', model)]
    written = []
    # A repeat is 2 images x 2 arms = 4 s: over the 5 s budget after two.
    done = time_arms(
        arms,
        _inputs(),
        10,
        CPU,
        clock,
        budget=Budget(5, clock),
        on_repeat=written.append)
    assert done == 2 and written == [1, 2]
    assert all(len(arm.times('img0')) == 2 for arm in arms)


def test_train_arms_cut_inside_warm_up_and_after_a_repeat():
    clock = Clock()
    models = dict(plain=Ticking(clock), apt=Ticking(clock))
    # One image: each warm-up step is 1 s; the fourth arm's warm-up starts
    # at 3 s > 2.5 s and is cut; the three others run one repeat.
    result = train_arms(models, _inputs(1), CPU, None, 5, Budget(2.5, clock))
    assert set(
        result['arms']) == {'plain_square', 'plain_window', 'apt_square'}
    assert 'while warming training apt_nopad up' in result['cut']['apt_nopad']
    assert result['repeats_done'] == 1
    assert result['summary']['nopad_speedup_vs_plain_window'] is None
    assert all(not m.training for m in models.values())


def test_overhead_of_each_run_in_its_own_autocast():
    apt = APTEVA02(
        arch=dict(embed_dims=32, num_layers=2, num_heads=1),
        img_size=128,
        thresholds=(2., 2., 0.3)).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        apt(x)  # the model's per-grid caches filled: both counts alike
    counts = overhead_counts(
        'a', dict(first=(apt, lambda: apt(x)), again=(apt, lambda: apt(x))),
        CPU, torch.bfloat16)
    # The same forward twice: in one shared autocast context the second
    # would reuse the first's cached weight casts and count fewer ops.
    assert counts['first']['ops'] == counts['again']['ops']
    assert counts['first']['total_ops'] > 0
    assert counts['first']['ops']['tokenizer'] > 0  # split by APT's marks


def test_compile_watch_counts_graph_breaks_and_recompiles():
    torch._dynamo.reset()

    def fn(x):
        y = x.sin()
        torch._dynamo.graph_break()
        return y.cos()

    compiled = torch.compile(fn, backend='eager')
    watch = CompileWatch(CPU)
    compiled(torch.randn(4))
    watch.first_call_done()
    compiled(torch.randn(4))  # same shape: no recompile
    same = watch.record()
    compiled(torch.randn(4, dtype=torch.float64))  # a new dtype: recompiles
    again = watch.record()
    assert same['graph_breaks'] >= 1 and same['graph_break_reasons']
    assert same['recompiles'] == 0 and again['recompiles'] > 0
    # Off CUDA nothing runs as CUDA graphs, and the record says so.
    assert same['cuda_graphs_recorded'] == 0
    assert same['ran_as_cuda_graphs'] is False
    torch._dynamo.reset()


def test_attention_probe_keeps_other_warnings(recwarn):
    import warnings

    from mmapt.models import EVA02
    with attention_probe(
            EVA02(
                arch=dict(embed_dims=8, num_layers=1, num_heads=1))) as record:
        warnings.warn('unrelated', UserWarning)
    assert record['kernel'] == 'none'
    assert [str(w.message) for w in recwarn] == ['unrelated']


def test_write_report_replaces_whole_files(tmp_path):
    path = str(tmp_path / 'r.json')
    report = dict(
        environment=dict(device='cpu', torch='x'),
        settings=dict(dtype='bf16', canvas=8, images=[], repeat=1),
        archs=dict(
            quick=dict(
                status='timed 1 of 2 repeats',
                arms={},
                skipped={},
                failed={},
                cut=dict(plain_square_compiled='cut by the time budget'))))
    markdown = write_report(report, path)
    assert json.loads((tmp_path / 'r.json').read_text()) == report
    text = open(markdown).read()
    assert 'Status: timed 1 of 2 repeats.' in text
    assert '**cut** `plain_square_compiled`' in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ['r.json', 'r.md']
