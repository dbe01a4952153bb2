"""The configs of ``configs/`` are built by inheritance, and what inherits
must stay what it claims to be:

- every APT config resolves to its plain baseline with only the backbone's
  type and APT keys changed (same data, heads, schedule, runtime), so the two
  cannot drift apart;
- an APT backbone un-normalises with the data preprocessor's mean / std,
  and so do the APT settings every config carries (``apt_backbone``, what
  an APT twin applies to its backbone);
- every fine-tune config is its APT config started from a trained baseline
  (same model and data; only the schedule and the start differ);
- every APT config of the tree is covered by the tables below.
"""
import copy
import functools
import glob
import os.path as osp

import pytest
from conftest import ROOT
from mmengine.config import Config

from mmapt.models.apt import APTAdapter

# The APT backbone's own arguments (thresholds, patch sizes, scorer, budget,
# static mode ...): what the APT classes add to their plain model.
APT_KEYS = APTAdapter.arg_names()
PLAIN_OF_APT_TYPE = {'APTEVA02': 'EVA02', 'APTViT': 'ViT'}

# APT config -> its plain baseline.
APT_BASELINES = {
    'apt_vitdet_coco.py': 'eva02_vitdet_coco.py',
    'apt_vitdet_coco_large.py': 'eva02_vitdet_coco_large.py',
    'apt_dinov2_vitdet_coco.py': 'dinov2_vitdet_coco.py',
    'apt_upernet_ade20k.py': 'eva02_upernet_ade20k.py',
    'apt_upernet_ade20k_large_512.py': 'eva02_upernet_ade20k_large_512.py',
    'apt_upernet_ade20k_large_640.py': 'eva02_upernet_ade20k_large_640.py',
    'apt_dinov2_upernet_ade20k.py': 'dinov2_upernet_ade20k.py',
    'toy/toy_apt_det.py': 'toy/toy_eva02_det.py',
    'toy/toy_apt_dinov2_det.py': 'toy/toy_dinov2_det.py',
    'toy/toy_apt_seg.py': 'toy/toy_eva02_seg.py',
    'toy/toy_apt_dinov2_seg.py': 'toy/toy_dinov2_seg.py',
}
# Fine-tune config -> the APT config it fine-tunes with.
FINETUNES = {
    'apt_vitdet_coco_finetune.py': 'apt_vitdet_coco.py',
    'apt_vitdet_coco_large_finetune.py': 'apt_vitdet_coco_large.py',
    'apt_upernet_ade20k_finetune.py': 'apt_upernet_ade20k.py',
    'apt_upernet_ade20k_large_512_finetune.py':
    'apt_upernet_ade20k_large_512.py',
    'apt_upernet_ade20k_large_640_finetune.py':
    'apt_upernet_ade20k_large_640.py',
    'toy/toy_apt_det_finetune.py': 'toy/toy_apt_det.py',
}
# APT variant -> the APT config it varies: same detector, other APT
# settings and per-image inputs (data preprocessor, pipelines).
VARIANTS = {
    'toy/toy_apt_importance_det.py': 'toy/toy_apt_det.py',
    'apt_vitdet_coco_learned.py': 'apt_vitdet_coco.py',
}
# Scorer distiller config -> the APT config whose backbone it distils.
DISTILLERS = {
    'learned_scorer_coco.py': 'apt_vitdet_coco.py',
    'toy/toy_learned_scorer_coco.py': 'toy/toy_apt_det.py',
    'learned_scorer_ade20k.py': 'apt_upernet_ade20k.py',
    'toy/toy_learned_scorer_ade.py': 'toy/toy_apt_seg.py',
    'toy/toy_learned_scorer_coco_task.py': 'toy/toy_apt_det.py',
    'toy/toy_learned_scorer_ade_task.py': 'toy/toy_apt_seg.py',
    'toy/toy_learned_scorer_coco_borders.py': 'toy/toy_apt_det.py',
    'toy/toy_learned_scorer_coco_budget.py': 'toy/toy_apt_det.py',
    'toy/toy_learned_scorer_ade_budget.py': 'toy/toy_apt_seg.py',
}
# Another test set for an APT config -> that config: the same model, only
# the test data (and its evaluator) differ.
TEST_SETS = {
    'toy/toy_apt_det_heldout.py': 'toy/toy_apt_det.py',
    'toy/toy_apt_seg_heldout.py': 'toy/toy_apt_seg.py',
}
VARIANT_KEYS = ('train_pipeline', 'test_pipeline', 'importance',
                'train_dataloader', 'val_dataloader', 'test_dataloader')
# What a fine-tune may change besides the schedule: the start.
SCHEDULE_KEYS = ('optim_wrapper', 'param_scheduler', 'train_cfg',
                 'default_hooks', 'load_from', 'max_iters')


@functools.lru_cache(maxsize=None)
def _resolved(name: str) -> dict:
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', name), import_custom_modules=False)
    return cfg.to_dict()


def _load(name: str) -> dict:
    """The resolved config (every ``_base_`` merged) as plain dicts."""
    return copy.deepcopy(_resolved(name))


def _all_configs():
    return sorted(
        osp.relpath(p, osp.join(ROOT, 'configs'))
        for p in glob.glob(osp.join(ROOT, 'configs', '*.py')) +
        glob.glob(osp.join(ROOT, 'configs', 'toy', '*.py')))


def _differences(a, b, path='') -> list:
    """Dotted paths where two resolved configs differ (types count: a tuple
    is not a list)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            sub = f'{path}.{key}' if path else str(key)
            if key not in a or key not in b:
                out.append(sub)
            else:
                out += _differences(a[key], b[key], sub)
        return out
    if (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
            and type(a) is type(b) and len(a) == len(b)):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _differences(x, y, f'{path}.{i}')
        return out
    return [] if (type(a) is type(b) and a == b) else [path]


def test_every_apt_config_is_covered():
    apt = {
        name
        for name in _all_configs()
        if _load(name)['model']['backbone']['type'] in PLAIN_OF_APT_TYPE
    }
    covered = set(APT_BASELINES) | set(FINETUNES) | set(VARIANTS) | set(
        DISTILLERS) | set(TEST_SETS)
    assert apt == covered, (
        f'APT configs without a baseline or fine-tune entry in '
        f'{osp.basename(__file__)}: {sorted(apt - covered)}; entries for '
        f'configs that are not APT: {sorted(covered - apt)}')
    assert set(FINETUNES.values()) <= set(APT_BASELINES)
    assert set(VARIANTS.values()) <= set(APT_BASELINES)
    assert set(TEST_SETS.values()) <= set(APT_BASELINES)


@pytest.mark.parametrize('name', sorted(TEST_SETS))
def test_test_set_config_changes_only_the_test_data(name):
    test_set, apt = _load(name), _load(TEST_SETS[name])
    changed = {path.split('.')[0] for path in _differences(test_set, apt)}
    assert changed <= {'test_dataloader', 'test_evaluator', 'heldout_root'}
    assert 'test_dataloader' in changed
    # The data root moved; the pipeline, sampler and batch stayed.
    assert _differences(test_set['test_dataloader'],
                        apt['test_dataloader']) == ['dataset.data_root']


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_apt_variant_changes_only_apt_settings_and_inputs(name):
    variant, apt = _load(name), _load(VARIANTS[name])
    for cfg in (variant, apt):
        backbone = cfg['model'].pop('backbone')
        cfg['model']['backbone'] = {
            k: v
            for k, v in backbone.items() if k not in APT_KEYS
        }
        cfg['model'].pop('data_preprocessor')
        for key in VARIANT_KEYS:
            cfg.pop(key, None)
    assert _differences(variant, apt) == []


@pytest.mark.parametrize('apt_name', sorted(APT_BASELINES))
def test_apt_config_is_its_baseline_with_apt_keys(apt_name):
    apt, plain = _load(apt_name), _load(APT_BASELINES[apt_name])
    apt_backbone = apt['model']['backbone']
    plain_backbone = plain['model']['backbone']
    assert PLAIN_OF_APT_TYPE[apt_backbone['type']] == plain_backbone['type']
    # The tokenizer un-normalises with the data preprocessor's statistics.
    preprocessor = apt['model']['data_preprocessor']
    assert apt_backbone['mean'] == preprocessor['mean']
    assert apt_backbone['std'] == preprocessor['std']
    # Nothing else of the backbone differs ...
    stripped = {
        k: v
        for k, v in apt_backbone.items() if k not in APT_KEYS + ('type', )
    }
    assert _differences(stripped, {
        k: v
        for k, v in plain_backbone.items() if k != 'type'
    }) == []
    # The APT settings are the baseline's `apt_backbone` (an APT config is
    # its twin plus `model = dict(backbone=_base_.apt_backbone)`).
    apt_settings = APT_KEYS + ('type', 'mean', 'std')
    applied = {k: v for k, v in apt_backbone.items() if k in apt_settings}
    assert _differences(applied, plain['apt_backbone']) == []
    # ... nor anything outside it. The segmentation baselines have no token
    # statistics hook (the detection runtime has it for all).
    del apt['model']['backbone'], plain['model']['backbone']
    if apt.get('custom_hooks') == [dict(type='TokenStatsHook')]:
        plain.setdefault('custom_hooks', [dict(type='TokenStatsHook')])
    assert _differences(apt, plain) == []


@pytest.mark.parametrize('name', _all_configs())
def test_apt_backbone_matches_the_data_preprocessor(name):
    """Every config's ``apt_backbone`` (the settings its APT twin, or a
    user's ``--cfg-options``, takes) names an APT type of its backbone's
    family and un-normalises with its data preprocessor's mean / std."""
    cfg = _load(name)
    apt = cfg['apt_backbone']
    plain_type = cfg['model']['backbone']['type']
    assert PLAIN_OF_APT_TYPE[apt['type']] == PLAIN_OF_APT_TYPE.get(
        plain_type, plain_type)
    preprocessor = cfg['model']['data_preprocessor']
    assert apt['mean'] == preprocessor['mean']
    assert apt['std'] == preprocessor['std']
    assert set(apt) - {'type', 'mean', 'std'} <= set(APT_KEYS)


@pytest.mark.parametrize('name', sorted(FINETUNES))
def test_finetune_is_its_apt_config_with_a_schedule(name):
    finetune, apt = _load(name), _load(FINETUNES[name])
    assert finetune['load_from'], f'{name}: fine-tunes start from load_from'
    # The whole model comes from load_from: no separate backbone init.
    assert finetune['model']['backbone']['init_cfg'] is None
    for cfg in (finetune, apt):
        cfg['model']['backbone'].pop('init_cfg')
        cfg['model']['backbone'].pop('thresholds')  # the toy picks its own
        for key in SCHEDULE_KEYS:
            cfg.pop(key, None)
    assert _differences(finetune, apt) == []
    # A fine-tune is short: a fraction of the schedule it starts from.
    ft_iters = _load(name)['train_cfg']['max_iters']
    assert ft_iters <= 0.1 * _load(
        APT_BASELINES[FINETUNES[name]])['train_cfg']['max_iters']


def test_differences_finds_a_changed_list_item():
    """The comparison itself: a list item, a missing key and a tuple/list
    swap are all found."""
    a = dict(x=[dict(t=1), dict(t=2)], y=(1, 2))
    assert _differences(a, dict(x=[dict(t=1), dict(t=3)],
                                y=(1, 2))) == ['x.1.t']
    assert _differences(a, dict(x=a['x'])) == ['y']
    assert _differences(a, dict(x=a['x'], y=[1, 2])) == ['y']


@pytest.mark.parametrize('name', sorted(DISTILLERS))
def test_distiller_backbone_is_its_apt_backbone(name):
    """A scorer distiller trains for the APT backbone it serves: the same
    backbone (and normalisation), only its weights' source and the drop
    path (off: the backbone is frozen) may differ."""
    distiller, apt = _load(name), _load(DISTILLERS[name])
    assert distiller['model']['type'] == 'ScorerDistiller'
    ours, theirs = (dict(cfg['model']['backbone']) for cfg in (distiller, apt))
    assert ours.pop('init_cfg')['prefix'] == 'backbone.'
    for backbone in (ours, theirs):
        backbone.pop('init_cfg', None)
        backbone.pop('drop_path_rate', None)
    assert _differences(ours, theirs) == []
    for key in ('mean', 'std'):
        assert distiller['model']['data_preprocessor'][key] == \
            apt['model']['data_preprocessor'][key]
