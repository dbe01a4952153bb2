"""tools/analysis/analyze_logs.py on a JSON log written by mmengine's own
Runner: ten iterations of a tiny regression model with a validation metric
and a keep ratio in the message hub (as TokenStatsHook puts it), logged
through LocalVisBackend exactly as the mmapt configs log."""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from conftest import ROOT
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn

from mmapt.visualization import training_logs

ITERS = 10


def _tool():
    spec = importlib.util.spec_from_file_location(
        'analyze_logs', osp.join(ROOT, 'tools', 'analysis', 'analyze_logs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Regressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, targets, mode='tensor'):
        # default_collate stacks the batch: inputs (B, 2), targets (B, 1).
        pred = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((pred - targets)**2).mean())
        return [
            dict(error=float((p - t).abs().mean()))
            for p, t in zip(pred, targets)
        ]


class _MeanError(BaseMetric):
    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results += [s['error'] for s in data_samples]

    def compute_metrics(self, results):
        return dict(mean_error=sum(results) / len(results))


class _KeepRatio(Hook):
    """What TokenStatsHook records: train/ and val/ keep ratios."""

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        runner.message_hub.update_scalar('train/keep_ratio',
                                         0.5 + 0.01 * runner.iter)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        runner.message_hub.update_scalar('val/keep_ratio', 0.6)


def _data(n):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, generator=g)
    return [dict(inputs=xi, targets=xi.sum(0, keepdim=True)) for xi in x]


@pytest.fixture(scope='module')
def work_dir(tmp_path_factory):
    """A real 10-iteration run, logging every 2 and validating at 5, 10."""
    work = tmp_path_factory.mktemp('analyze_logs')
    loader = dict(
        batch_size=4,
        dataset=_data(16),
        sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='default_collate'))
    runner = Runner(
        model=_Regressor(),
        work_dir=str(work),
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=Evaluator(_MeanError()),
        train_cfg=dict(by_epoch=False, max_iters=ITERS, val_interval=5),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(
            logger=dict(
                type='LoggerHook', interval=2, log_metric_by_epoch=False),
            checkpoint=dict(type='CheckpointHook', interval=ITERS)),
        custom_hooks=[_KeepRatio()],
        log_processor=dict(by_epoch=False),
        visualizer=dict(
            type='Visualizer',
            vis_backends=[dict(type='LocalVisBackend')],
            name='analyze-logs-test'),
        default_scope='mmengine')
    runner.train()
    return str(work)


def test_reads_the_runner_log(work_dir):
    log = training_logs.find_log(work_dir)
    assert log.endswith(osp.join('vis_data', 'scalars.json'))
    records = training_logs.load_log(log)
    assert [r['step'] for r in records['train']] == [2, 4, 6, 8, 10]
    assert [r['step'] for r in records['val']] == [5, 10]
    steps, values = training_logs.curve(records, 'keep_ratio', log)
    assert steps == [2, 4, 6, 8, 10]  # training records first
    assert values[0] == pytest.approx(0.51)
    assert training_logs.curve(records, 'val/keep_ratio',
                               log) == ([5, 10], [0.6, 0.6])
    assert training_logs.curve(records, 'toy/mean_error', log)[0] == [5, 10]


def test_plot_curve_writes_a_png(work_dir, tmp_path):
    out = tmp_path / 'curves.png'
    code = _tool().main([
        'plot_curve', work_dir, work_dir, '--keys', 'loss', 'keep_ratio',
        'toy/mean_error', '--legend', 'a', 'b', '--out',
        str(out)
    ])
    assert code == 0
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_missing_key_names_the_available_keys(work_dir, tmp_path, capsys):
    out = tmp_path / 'none.png'
    code = _tool().main(
        ['plot_curve', work_dir, '--keys', 'coco/bbox_mAP', '--out',
         str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "key 'coco/bbox_mAP' is not in" in err
    assert 'training: ' in err and 'keep_ratio' in err and 'loss' in err
    assert 'validation: ' in err and 'toy/mean_error' in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cal_train_time(work_dir, capsys):
    tool = _tool()
    stats = training_logs.train_time(training_logs.find_log(work_dir))
    assert stats['records'] == 4  # the first (start-up) record left out
    assert stats['last_iter'] == ITERS
    assert stats['mean_s'] > 0
    assert stats['est_total_s'] == pytest.approx(stats['mean_s'] * ITERS)
    assert tool.main(['cal_train_time', work_dir]) == 0
    out = capsys.readouterr().out
    assert 'time per iteration: mean' in out
    assert f'for {ITERS} iterations' in out


def test_bad_logs_get_one_line(tmp_path, capsys):
    tool = _tool()
    assert tool.main(['cal_train_time', str(tmp_path / 'nothing')]) == 2
    assert 'no such file or work dir' in capsys.readouterr().err
    assert tool.main(['cal_train_time', str(tmp_path)]) == 2
    assert 'no vis_data/scalars.json below it' in capsys.readouterr().err
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(loss=1.0)) + '\n')
    assert tool.main(['plot_curve', str(bad), '--out', 'x.png']) == 2
    assert 'not a runner log record' in capsys.readouterr().err
