"""The static-shape mode in runs: ``pack_size`` checked before the model is
built (preflight, tools/test.py), and a training whose batches overflow
their pack size stays finite and logs how many were capped."""
import json
import os.path as osp

import pytest
import torch
from conftest import ROOT, run_tool
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmapt.engine  # noqa: F401
from mmapt.engine.preflight import BadInputError, check_pack_size_option
from mmapt.models import APTEVA02

TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def _toy_cfg(pack_size):
    cfg = Config.fromfile(TOY_DET)
    cfg.model.backbone.pack_size = pack_size
    return cfg


@pytest.mark.parametrize('value', [0, -1, True, 1.5, [], ['a']])
def test_preflight_refuses_bad_forms_like_the_backbone(value):
    with pytest.raises(BadInputError) as err:
        check_pack_size_option(_toy_cfg(value), 'toy.py')
    with pytest.raises(ValueError) as model_err:
        APTEVA02(
            arch=dict(
                embed_dims=32, num_layers=1, num_heads=1, scale_mlp=False),
            img_size=256,
            thresholds=(2, 2),
            pack_size=value)
    assert str(err.value) == f'model.backbone of toy.py: {model_err.value}'


def test_preflight_sizes_against_the_loader_batch():
    # Toy: batches of 4 on a 256 x 256 canvas (16 x 16 cells, 4 scales):
    # the coarsest layout needs 4 x 4 tokens, a quarter of the cells 4 x 64.
    for ok in (None, 'auto', 256, 580, [100, 1024]):
        check_pack_size_option(_toy_cfg(ok), 'toy.py', 'test')
    check_pack_size_option(_toy_cfg(40), 'toy.py')  # form only: fine
    with pytest.raises(
            BadInputError,
            match='pack_size=40 cannot serve a '
            'test batch of 4: 40 packed tokens would cap nearly '
            'every batch.*pack_size >= 256'):
        check_pack_size_option(_toy_cfg(40), 'toy.py', 'test')
    with pytest.raises(
            BadInputError, match='fewer than its coarsest layout '
            r'needs \(16\)'):
        check_pack_size_option(_toy_cfg([8, 10]), 'toy.py', 'train')
    # Budget mode: a full batch's budget (4 x 128) is the floor.
    cfg = _toy_cfg(500)
    cfg.model.backbone.keep_ratio = 0.5
    with pytest.raises(BadInputError, match='fewer tokens than its budget'):
        check_pack_size_option(cfg, 'toy.py', 'train')
    cfg.model.backbone.pack_size = 512
    check_pack_size_option(cfg, 'toy.py', 'train')


def test_test_tool_impossible_pack_size_stops_before_the_data(tmp_path):
    # No data set and no checkpoint here: the pack size is refused first.
    proc = run_tool([
        'tools/test.py', TOY_DET,
        str(tmp_path / 'missing.pth'), '--cfg-options',
        'model.backbone.pack_size=40'
    ],
                    cwd=tmp_path,
                    check=False,
                    timeout=300)
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pack_size=40 cannot serve' in lines[0]
    assert 'missing.pth' not in lines[0]


# ------------------------------------------------------------- training
class FlatAndNoise(Dataset):
    """64 x 64 images: flat (4 tokens, one per 32-px patch) or uniform
    noise (16, every base token)."""
    KINDS = ('flat', 'noise', 'noise', 'noise', 'flat', 'flat', 'noise',
             'noise')

    def __len__(self):
        return len(self.KINDS)

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        pixels = torch.rand(3, 64, 64, generator=gen) * 255
        if self.KINDS[i] == 'flat':
            pixels.fill_(90.)
        return dict(inputs=(pixels - MEAN) / STD)


class FeatureModel(BaseModel):
    """A tiny APT-EVA02 and a loss on its last feature map."""

    def __init__(self, pack_size):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = APTEVA02(
            arch=dict(
                embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False),
            img_size=64,
            patch_size=16,
            thresholds=(2, ),
            out_indices=(1, ),
            pack_size=pack_size)
        self.head = torch.nn.Conv2d(32, 1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        inputs = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.head(self.backbone(inputs)[-1])
        if mode == 'loss':
            return dict(loss=(out - 1).square().mean())
        return out


def test_training_past_the_pack_size_is_finite_and_logs_capped(tmp_path):
    # Batches of 2 on a 4 x 4 grid: flat 4 tokens, noise 16. pack_size 24
    # holds every batch but noise + noise (32): batches 2 and 4 of 4.
    runner = Runner(
        model=FeatureModel(pack_size=24),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=FlatAndNoise(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=[dict(type='TokenStatsHook')],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        log_processor=dict(by_epoch=False, window_size=1),
        experiment_name=f'pack_size_train_{id(tmp_path)}',
        default_scope='mmengine')
    runner.train()
    with open(osp.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if 'loss' in r]
    assert len(rows) == 4
    assert all(torch.isfinite(torch.tensor(r['loss'])) for r in rows)
    assert [r['capped'] for r in rows] == [0, 1, 0, 1]
    # Capped batches share 24 tokens (13 + 10: whole splits of 3), not 32.
    assert [r['tokens'] for r in rows] == [10, 11.5, 4, 11.5]
    for param in runner.model.parameters():
        assert bool(param.isfinite().all())
    log = open(osp.join(runner.log_dir, f'{runner.timestamp}.log')).read()
    assert 'a train batch needed more tokens than' in log
    assert '2 of 4 train backbone calls were capped' in log
