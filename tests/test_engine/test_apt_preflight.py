"""Every APT option of a config is checked before the model is built or any
data is read, with the backbone's own messages; the backbone refuses input
it cannot take in words; importance map files are checked when loaded."""
import os.path as osp

import numpy as np
import pytest
import torch
from conftest import ROOT
from mmengine.config import Config

from mmapt.engine import preflight
from mmapt.engine.preflight import BadInputError, check_apt_options
from mmapt.models import APTEVA02, EVA02

TOY_DET = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')
TOY_IMPORTANCE = osp.join(ROOT, 'configs', 'toy', 'toy_apt_importance_det.py')
ARCH = dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=True)


def _toy(**backbone) -> Config:
    cfg = Config.fromfile(TOY_DET)
    cfg.merge_from_dict({
        f'model.backbone.{k}': v
        for k, v in backbone.items()
    })
    return cfg


def _backbone_error(cfg: Config) -> str:
    """The message of the backbone's own check, building it for real."""
    kwargs = dict(cfg.model.backbone)
    kwargs.pop('type')
    kwargs['init_cfg'] = None
    with pytest.raises(ValueError) as info:
        APTEVA02(**kwargs)(torch.zeros(1, 3, 256, 256))
    return str(info.value)


@pytest.mark.parametrize(
    'option,match',
    [(dict(keep_ratio=0), 'keep_ratio must be in \\(0, 1\\]'),
     (dict(keep_ratio=1.5), 'keep_ratio must be in'),
     (dict(token_budget=1), 'token_budget 1 is below the minimum of 4'),
     (dict(token_budget=0), 'token_budget must be a positive int'),
     (dict(scorer='entorpy'), "unknown patch scorer 'entorpy'; registered "
      'scorers: contrast, entropy, gradient, importance'),
     (dict(threshold_floor=True), 'threshold_floor=True needs budget mode'),
     (dict(keep_ratio=0.5, token_budget=100), 'not both')])
def test_apt_options_are_refused_from_the_config(option, match):
    cfg = _toy(**option)
    with pytest.raises(BadInputError, match=match) as info:
        check_apt_options(cfg, 'toy.py')
    message = str(info.value)
    assert message.startswith('model.backbone of toy.py: ')
    # The backbone's own check says the same (shared validation).
    assert message.split(': ', 1)[1] == _backbone_error(cfg)


def test_good_apt_options_and_plain_configs_pass():
    check_apt_options(_toy(), 'toy.py')
    check_apt_options(_toy(keep_ratio=0.5, scorer='gradient'), 'toy.py')
    check_apt_options(_toy(token_budget=4), 'toy.py')  # the minimum
    plain = Config.fromfile(
        osp.join(ROOT, 'configs', 'toy', 'toy_eva02_det.py'))
    check_apt_options(plain, 'plain.py')
    # Another scope's backbone is left to that scope's build.
    check_apt_options(
        Config(dict(model=dict(backbone=dict(type='ResNet')))), 'r.py')
    for name in ('apt_vitdet_coco.py', 'apt_upernet_ade20k.py',
                 'toy/toy_apt_importance_det.py', 'toy/toy_apt_seg.py'):
        check_apt_options(
            Config.fromfile(osp.join(ROOT, 'configs', name)), name)


def test_importance_settings(tmp_path):
    cfg = Config.fromfile(TOY_IMPORTANCE)
    check_apt_options(cfg, 'imp.py')
    # The importance scorer without maps in a pipeline.
    no_maps = Config.fromfile(TOY_IMPORTANCE)
    no_maps.test_dataloader.dataset.pipeline = \
        no_maps.test_dataloader.dataset.pipeline[:-1]
    with pytest.raises(BadInputError, match='test pipeline .* needs a map'):
        check_apt_options(no_maps, 'imp.py')
    # Maps without the importance scorer.
    with pytest.raises(BadInputError, match="scorer is 'entropy'"):
        check_apt_options(
            _merged(TOY_IMPORTANCE, {'model.backbone.scorer': 'entropy'}),
            'imp.py')
    # A map folder that does not exist; a map suffix LoadImportanceMap
    # refuses.
    for step, error, match in ((dict(
            type='LoadImportanceMap',
            folder=str(tmp_path / 'none')), preflight.MissingInputError,
                                'folder .*none not found'),
                               (dict(
                                   type='LoadImportanceMap',
                                   folder=str(tmp_path),
                                   suffix='.jpg'), BadInputError,
                                "suffix must be '.npy' or '.png'")):
        bad = Config.fromfile(TOY_IMPORTANCE)
        for split in ('train', 'test'):
            loader = bad[f'{split}_dataloader']
            loader.dataset.pipeline = loader.dataset.pipeline[:-1] + [step]
        with pytest.raises(error, match=match):
            check_apt_options(bad, 'imp.py')
    # The maps reach the backbone only through APTDataPreprocessor.
    plain_pre = _merged(TOY_IMPORTANCE, {})
    plain_pre.model.data_preprocessor = Config.fromfile(
        TOY_DET).model.data_preprocessor
    with pytest.raises(BadInputError, match='APTDataPreprocessor'):
        check_apt_options(plain_pre, 'imp.py')


def _merged(path: str, options: dict) -> Config:
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(options)
    return cfg


# ------------------------------------------------------ backbone inputs
@pytest.mark.parametrize(
    'cls,apt', [(EVA02, {}),
                (APTEVA02, dict(thresholds=(1.0, ), patch_sizes=(16, 32)))])
def test_backbone_names_shape_and_dtype(cls, apt):
    model = cls(arch=ARCH, img_size=64, patch_size=16, **apt)
    image = torch.randn(3, 64, 64)
    with pytest.raises(
            ValueError,
            match=r'\(B, 3, H, W\).*got shape '
            r'\(3, 64, 64\) \(one image: add the batch axis'):
        model(image)
    with pytest.raises(
            ValueError, match='got torch.uint8 pixels: subtract '
            'the mean'):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(
            ValueError,
            match=r'input dtype torch.float16 differs '
            r"from the weights' torch.float32: run under "
            'torch.autocast'):
        model(image[None].half())
    with pytest.raises(ValueError, match=r'got shape \(1, 5, 64, 64\)'):
        model(torch.zeros(1, 5, 64, 64))
    # Under autocast a half-precision input is what the weights expect.
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(image[None].bfloat16())
    assert outs[-1].shape[-2:] == (4, 4)


# ----------------------------------------------------- importance map files
@pytest.mark.parametrize('content,match', [
    (np.zeros((10, 10), np.float32), r'has shape \(10, 10\), expected the '
     r'original image size \(20, 30\) of .*img.png'),
    (np.full((20, 30), np.nan, np.float32), '600 NaN or inf values'),
])
def test_importance_map_file_is_checked_when_loaded(tmp_path, content, match):
    from mmapt.datasets import ImportanceMapError, LoadImportanceMap
    np.save(tmp_path / 'img.npy', content)
    results = _packed_results(tmp_path)
    with pytest.raises(ImportanceMapError, match=match) as info:
        LoadImportanceMap(folder=str(tmp_path))(results)
    assert str(tmp_path / 'img.npy') in str(info.value)


def _packed_results(folder) -> dict:
    from mmengine.structures import BaseDataElement
    sample = BaseDataElement(
        metainfo=dict(
            img_path=str(folder / 'img.png'),
            ori_shape=(20, 30),
            img_shape=(40, 60)))
    return dict(inputs=torch.zeros(3, 64, 64), data_samples=sample)


def test_importance_map_error_from_a_worker_is_one_line(tmp_path, capsys):
    """tools/test.py reads data in worker processes: the error they re-raise
    carries the worker's traceback, the tools print its last line."""
    from torch.utils.data import DataLoader

    from mmapt.datasets import LoadImportanceMap
    np.save(tmp_path / 'img.npy', np.zeros((10, 10), np.float32))
    transform = LoadImportanceMap(folder=str(tmp_path))
    loader = DataLoader(
        _MapDataset(transform, tmp_path), num_workers=1, batch_size=None)
    with pytest.raises(SystemExit) as info:
        with preflight.exit_on_input_error():
            next(iter(loader))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith('ValueError: importance map ') and 'img.npy' in err


class _MapDataset(torch.utils.data.Dataset):

    def __init__(self, transform, folder):
        self.transform = transform
        self.folder = folder

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return self.transform(_packed_results(self.folder))['inputs']


def test_unwritable_output_files(tmp_path):
    blocker = tmp_path / 'blocker'
    blocker.write_text('')
    with pytest.raises(
            preflight.UnwritableOutputError,
            match='--plot .*blocker is a file'):
        preflight.check_writable_file(str(blocker / 'p.png'), '--plot')
    with pytest.raises(
            preflight.UnwritableOutputError,
            match='is a folder: give a file name'):
        preflight.check_writable_file(str(tmp_path), '--out')
    preflight.check_writable_file(str(tmp_path / 'new' / 'p.png'), '--plot')
    assert not (tmp_path / 'new').exists()  # nothing created
