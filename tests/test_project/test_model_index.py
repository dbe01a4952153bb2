"""The OpenMMLab model index: ``model-index.yml`` imports one metafile per
family; every model entry has an OpenMMLab long name and names a config that
loads and builds; every config of ``configs/`` (except ``_base_`` and
``toy``) has an entry."""
import copy
import glob
import os.path as osp
import re

import pytest
import torch
import yaml
from conftest import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope

# backbone_algorithm_GPUSxbBATCH-SCHEDULE[-extra]_dataset-size, lower case.
LONG_NAME = re.compile(r'^[a-z0-9.-]+_[a-z0-9.-]+_\d+xb\d+-\d+k[a-z0-9-]*'
                       r'_[a-z0-9]+-[0-9x]+$')


def load_index():
    with open(osp.join(ROOT, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    collections, models = [], []
    for metafile in index['Import']:
        with open(osp.join(ROOT, metafile)) as f:
            meta = yaml.safe_load(f)
        collections += meta.get('Collections', [])
        models += meta['Models']
    return collections, models


COLLECTIONS, MODELS = load_index()
INDEXED = [m['Config'] for m in MODELS]


def test_every_config_is_in_the_index():
    configs = {
        osp.relpath(p, ROOT)
        for p in glob.glob(
            osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
        if not osp.relpath(p, osp.join(ROOT, 'configs')).startswith(('_base_',
                                                                     'toy'))
    }
    assert configs, 'no config found'
    missing = sorted(configs - set(INDEXED))
    assert not missing, (
        f'configs without a model-index entry: {missing}; add one `Models` '
        'entry per config to its family metafile (configs/*/metafile.yml)')


def test_entries_follow_the_openmmlab_schema():
    names = [m['Name'] for m in MODELS]
    assert len(names) == len(set(names)), 'duplicate model names'
    assert len(INDEXED) == len(set(INDEXED)), 'a config is indexed twice'
    collection_names = {c['Name'] for c in COLLECTIONS}
    for collection in COLLECTIONS:
        assert osp.isfile(osp.join(ROOT, collection['README']))
        assert collection['Paper']['URL'].startswith('https://')
    for model in MODELS:
        assert LONG_NAME.match(model['Name']), model['Name']
        assert model['In Collection'] in collection_names
        assert osp.isfile(osp.join(ROOT, model['Config'])), model['Config']
        assert model['Metadata']['Backbone']
        # No number is claimed before a model has been scored here.
        assert 'Results' not in model, (
            f'{model["Name"]}: results only once scored here')
        fine_tuned = model['Metadata'].get('Fine-tuned From')
        if fine_tuned:
            assert fine_tuned in names


@pytest.mark.parametrize('model', MODELS, ids=lambda m: m['Name'])
def test_weights_are_local_and_say_where_they_come_from(model):
    """`Weights` (what `mim search --field weight` shows) is a local path,
    never a URL: the converted release of the config's model, made by the
    converter command of `Weights From` (also written in docs/reproduce.md),
    or the last checkpoint of training the config."""
    weights, source = model['Weights'], model['Metadata']['Weights From']
    assert '://' not in weights
    name = osp.splitext(osp.basename(model['Config']))[0]
    if weights.startswith('checkpoints/'):
        assert weights.endswith('_mmapt.pth')
        assert source.startswith('converted (no download) from '), source
        release, converter = source.split()[4], source.split()[6]
        assert osp.isfile(osp.join(ROOT, converter.rstrip(','))), converter
        with open(osp.join(ROOT, 'docs', 'reproduce.md')) as f:
            reproduce = f.read()
        # docs/reproduce.md converts that release to that path.
        assert f'{release} {weights}' in ' '.join(reproduce.split()), (
            f'{model["Name"]}: docs/reproduce.md has no conversion of '
            f'{release} to {weights}')
    else:
        iters = model['Metadata']['Iterations']
        assert weights == f'work_dirs/{name}/iter_{iters}.pth'
        assert source == ('made by training the config (not released, no '
                          f'download): python tools/train.py '
                          f'{model["Config"]}')


def test_mim_model_index_parser_reads_the_index():
    """The model-index package (what `mim search` uses) accepts the files."""
    modelindex = pytest.importorskip('modelindex')
    index = modelindex.load(osp.join(ROOT, 'model-index.yml'))
    assert sorted(m.name for m in index.models) == sorted(m['Name']
                                                          for m in MODELS)
    assert sorted(m.config for m in index.models) == sorted(INDEXED)
    assert sorted(m.weights for m in index.models) == sorted(m['Weights']
                                                             for m in MODELS)


def _shrink_large(model_cfg) -> None:
    """EVA-02-L at 1536 takes ~300M parameters to build: the L configs are
    built with the base width and depth-12 taps (the wiring is what is
    checked; the L numbers themselves are checked by the family tests)."""
    backbone = model_cfg.backbone
    if backbone.get('arch') != 'large':
        return
    backbone.arch = 'base'
    if backbone.get('global_attn_indexes'):
        backbone.global_attn_indexes = (2, 5, 8, 11)
    if len(backbone.get('out_indices', ())) == 4:
        backbone.out_indices = (3, 5, 7, 11)
    neck = model_cfg.neck
    if 'backbone_channel' in neck:
        neck.backbone_channel = 768
        neck.in_channels = [192, 384, 768, 768]
    if 'embed_dim' in neck:
        neck.embed_dim = 768
    if 'decode_head' in model_cfg:
        model_cfg.decode_head.in_channels = [768] * 4
        model_cfg.decode_head.channels = 768
        model_cfg.auxiliary_head.in_channels = 768


@pytest.mark.parametrize('config', INDEXED)
def test_indexed_config_loads_and_builds(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    scope = cfg.default_scope
    assert scope in ('mmdet', 'mmseg')
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import MODELS as REGISTRY
    else:
        from mmseg.registry import MODELS as REGISTRY
    model_cfg = copy.deepcopy(cfg.model)
    _shrink_large(model_cfg)
    model = REGISTRY.build(model_cfg)
    assert type(model.backbone).__name__ == cfg.model.backbone.type
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
