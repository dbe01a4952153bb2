"""TokenStatsHook in a real mmengine Runner: train, val and test."""
import json
import os.path as osp
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import METRICS
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local
from mmengine.utils import digit_version
from torch.utils.data import Dataset

import mmapt.engine  # noqa: F401
from mmapt.engine import TokenStatsHook, trusted_checkpoints
from mmapt.models.backbones import TokenObservable


class FakeBackbone(nn.Module, TokenObservable):
    """Keeps ``round(keep * 16)`` of 16 tokens, keep in [0.25, 1]."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, 1)

    def forward(self, x):
        keep = x[:, 0].clamp(0.25, 1.0)
        tokens = (keep * 16).round().long()
        self.notify_tokens(tokens, torch.full_like(tokens, 16))
        return self.proj(x)


class NoStatsBackbone(nn.Linear):

    def __init__(self):
        super().__init__(2, 1)


class ToyModel(BaseModel):

    def __init__(self, with_stats=True):
        super().__init__()
        self.backbone = FakeBackbone() if with_stats else NoStatsBackbone()

    def forward(self, inputs, data_samples=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.backbone(inputs)
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return [dict(pred=o) for o in out]


class KeepDataset(Dataset):
    """Image i has keep ratio KEEPS[i]: batches of 4 keep 4 and 13 tokens on
    average, the 8 images 8.5."""
    KEEPS = (0.25, 0.25, 0.25, 0.25, 0.5, 0.75, 1.0, 1.0)

    def __len__(self):
        return len(self.KEEPS)

    def __getitem__(self, i):
        return dict(inputs=torch.tensor([self.KEEPS[i], 1.0]))


@METRICS.register_module(force=True)
class CountMetric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(data_samples)

    def compute_metrics(self, results):
        return dict(count=len(results))


def make_runner(tmp_path, model, hooks=(dict(type='TokenStatsHook'), )):
    loader = dict(
        dataset=KeepDataset(),
        sampler=dict(type='DefaultSampler', shuffle=False),
        batch_size=4,
        num_workers=0)
    return Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=loader,
        val_dataloader=loader,
        test_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=4, val_interval=4),
        val_cfg=dict(),
        test_cfg=dict(),
        val_evaluator=dict(type='CountMetric'),
        test_evaluator=dict(type='CountMetric'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=list(hooks),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False),
        experiment_name=f'token_stats_{id(model)}',
        default_scope='mmengine')


def read_json_log(runner):
    path = osp.join(runner.log_dir, 'vis_data', 'scalars.json')
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_train_val_test_statistics(tmp_path):
    runner = make_runner(tmp_path, ToyModel())
    runner.train()
    hub = runner.message_hub
    # Last train batch: images 4-7, 13 of 16 tokens.
    assert hub.get_scalar('train/tokens').current() == pytest.approx(13)
    assert hub.get_scalar('train/keep_ratio').current() == pytest.approx(13 /
                                                                         16)
    assert hub.get_scalar('train/baseline_tokens').current() == 16
    # The val epoch summary: mean over all 8 images, not the last batch.
    assert hub.get_scalar('val/tokens').current() == pytest.approx(8.5)
    log = read_json_log(runner)
    train_rows = [r for r in log if 'loss' in r]
    assert len(train_rows) == 4 and all('keep_ratio' in r for r in train_rows)
    assert [r['tokens'] for r in train_rows] == [4, 13, 4, 13]
    val_rows = [r for r in log if 'count' in r]
    assert val_rows and val_rows[-1]['tokens'] == pytest.approx(8.5)
    assert val_rows[-1]['keep_ratio'] == pytest.approx(8.5 / 16)

    metrics = runner.test()
    assert metrics['count'] == 8
    assert hub.get_scalar('test/tokens').current() == pytest.approx(8.5)
    assert hub.get_scalar('test/keep_ratio').current() == pytest.approx(8.5 /
                                                                        16)


class FakeRunner:
    iter = 0

    def __init__(self, name, model):
        self.message_hub = MessageHub.get_instance(name)
        self.model = model


def test_epoch_mean_weights_every_image():
    """Uneven batches: the epoch mean is over images, not batches."""
    hook = TokenStatsHook()
    model = ToyModel()
    runner = FakeRunner('token_stats_epoch_test', model)
    hook.before_test_epoch(runner)
    for keeps in ([0.25, 0.25, 0.25], [1.0]):
        hook.before_test_iter(runner, 0)
        model.backbone(torch.tensor([[k, 1.0] for k in keeps]))
        hook.after_test_iter(runner, 0)
    assert runner.message_hub.get_scalar('test/tokens').current() == 16
    hook.after_test_epoch(runner)
    assert runner.message_hub.get_scalar('test/tokens').current() == 7
    assert runner.message_hub.get_scalar(
        'test/keep_ratio').current() == pytest.approx(7 / 16)


def test_calls_of_an_iteration_are_summed_per_image():
    """Slide inference calls the backbone once per crop: every crop counts,
    and the keep ratio is per image over all its crops."""
    hook = TokenStatsHook()
    model = ToyModel()
    runner = FakeRunner('token_stats_slide_test', model)
    hook.before_test_epoch(runner)
    hook.before_test_iter(runner, 0)
    # Two images, three crops each: image 0 keeps 4, 8, 16 tokens, image 1
    # always 16.
    for keep in (0.25, 0.5, 1.0):
        model.backbone(torch.tensor([[keep, 1.0], [1.0, 1.0]]))
    hook.after_test_iter(runner, 0)
    hub = runner.message_hub
    assert hub.get_scalar('test/backbone_calls').current() == 3
    assert hub.get_scalar('test/tokens').current() == (28 + 48) / 2
    assert hub.get_scalar('test/baseline_tokens').current() == 48
    assert hub.get_scalar('test/keep_ratio').current() == pytest.approx(
        (28 / 48 + 1) / 2)
    # The next iteration starts from zero.
    hook.before_test_iter(runner, 1)
    model.backbone(torch.tensor([[0.5, 1.0]]))
    hook.after_test_iter(runner, 1)
    assert hub.get_scalar('test/tokens').current() == 8
    hook.after_test_epoch(runner)
    assert hub.get_scalar('test/tokens').current() == pytest.approx(
        (28 + 48 + 8) / 3)


def test_unwraps_model_wrappers_and_removes_observer():
    hook = TokenStatsHook()
    inner = ToyModel()
    wrapper = nn.Module()
    wrapper.module = inner
    runner = FakeRunner('token_stats_unwrap_test', wrapper)
    hook.before_run(runner)
    hook.before_train_iter(runner, 0)
    inner.backbone(torch.tensor([[0.5, 1.0]]))
    hook.after_train_iter(runner, 0)
    assert runner.message_hub.get_scalar('train/keep_ratio').current() == 0.5
    hook.after_run(runner)
    assert not inner.backbone._token_observers


def test_model_without_token_stats_is_skipped(tmp_path, caplog):
    runner = make_runner(tmp_path, ToyModel(with_stats=False))
    runner.train()
    assert 'train/tokens' not in runner.message_hub.log_scalars
    assert 'val/tokens' not in runner.message_hub.log_scalars


def test_interval_validation():
    with pytest.raises(ValueError, match='interval'):
        TokenStatsHook(interval=0)


def test_runner_checkpoint_round_trip(tmp_path):
    """mmengine checkpoints (message hub, numpy state) load on torch >= 2.6,
    whose torch.load defaults to weights_only=True, inside
    trusted_checkpoints() (mmengine calls torch.load without the argument);
    outside it, mmengine's own loader is untouched by ``import mmapt``."""
    runner = make_runner(tmp_path, ToyModel())
    runner.train()
    runner.save_checkpoint(str(tmp_path), 'round_trip.pth')
    path = str(tmp_path / 'round_trip.pth')
    assert CheckpointLoader._get_checkpoint_loader(path) is load_from_local
    if digit_version(torch.__version__) >= digit_version('2.6'):
        with pytest.raises(pickle.UnpicklingError):
            runner.load_checkpoint(path)
    with trusted_checkpoints():
        with trusted_checkpoints():  # nested blocks are fine
            ckpt = runner.load_checkpoint(path)
        runner.resume(path)
    assert 'message_hub' in ckpt and 'state_dict' in ckpt
    assert runner.iter == 4
    assert CheckpointLoader._get_checkpoint_loader(path) is load_from_local
