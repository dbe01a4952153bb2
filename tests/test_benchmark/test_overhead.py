"""The overhead counter (mmapt.benchmark.overhead) on functions whose ops and
host syncs are known, and the floors APT's forward must stay under."""
import os

import pytest
import torch
from conftest import marked_module

from mmapt.benchmark.overhead import OverheadCounts, count_overhead
from mmapt.models.stages import forward_stage

OWNER = marked_module()


def test_counts_ops_per_stage_innermost_mark_wins():
    x = torch.arange(10.)

    def fn():
        x.add(1)  # other: 1
        with forward_stage(OWNER, 'tokenizer'):
            y = x.mul(2)  # tokenizer: 1
            y.view(2, 5)  # a view is an op too
            with forward_stage(OWNER, 'embedding'):
                y.sub(1)
                y.neg()
            y.exp()

    counts = count_overhead(fn, model=OWNER)
    assert counts.ops == {'other': 1, 'tokenizer': 3, 'embedding': 2}
    assert counts.op_names['tokenizer'] == {
        'aten.mul.Tensor': 1,
        'aten.view.default': 1,
        'aten.exp.default': 1
    }
    assert counts.syncs == {} and counts.sync_sites == []
    assert counts.total_ops == 6 and counts.total_syncs == 0
    assert counts.outside_blocks == 6


def test_blocks_are_not_outside_blocks():
    x = torch.ones(3)

    def fn():
        with forward_stage(OWNER, 'blocks'):
            x.add(1).add(2)
        x.add(3)

    counts = count_overhead(fn, model=OWNER)
    assert counts.ops == {'blocks': 2, 'other': 1}
    assert counts.outside_blocks == 1


def test_python_reads_count_once_each():
    x = torch.arange(6.)

    def fn():
        with forward_stage(OWNER, 'context'):
            int(x.sum())  # sum + _local_scalar_dense: one read
            x.tolist()
            x[1].item()
            float(x.max())
            bool(x.any())
            range(10)[torch.tensor(2)]  # __index__
            x.numpy()

    counts = count_overhead(fn, model=OWNER)
    assert counts.syncs == {'context': 7}
    kinds = [site.split(' at ')[0] for site in counts.sync_sites]
    assert kinds == [
        'context: Tensor.__int__()', 'context: Tensor.tolist()',
        'context: Tensor.item()', 'context: Tensor.__float__()',
        'context: Tensor.__bool__()', 'context: Tensor.__index__()',
        'context: Tensor.numpy()'
    ]
    # Each site names the line of this file that read the value.
    here = os.path.basename(__file__)
    assert all(f'{here}:' in site for site in counts.sync_sites)
    # The wrappers are gone afterwards.
    assert 'tolist' not in torch.Tensor.__dict__ or \
        torch.Tensor.__dict__['tolist'].__name__ != 'read'


def test_data_dependent_ops_are_syncs_static_ones_are_not():
    x = torch.tensor([0., 3., 0., 5.])
    mask = x > 0
    repeats = torch.tensor([1, 2])

    def fn():
        with forward_stage(OWNER, 'tokenizer'):
            mask.nonzero()
            x[mask]
            x.masked_select(mask)
            torch.unique(x)
            torch.repeat_interleave(repeats)
            torch.bincount(repeats)
        with forward_stage(OWNER, 'embedding'):
            torch.nonzero_static(mask, size=4)
            torch.repeat_interleave(repeats, output_size=3)
            x.cumsum(0)
            torch.searchsorted(x.sort().values, x)
            x.index_select(0, repeats)

    counts = count_overhead(fn, model=OWNER)
    assert counts.syncs == {'tokenizer': 6}
    assert counts.ops['tokenizer'] >= 6
    assert counts.ops['embedding'] >= 5


def test_as_dict_and_dataclass():
    counts = OverheadCounts(
        ops={
            'blocks': 4,
            'unpack': 1
        },
        syncs={'unpack': 1},
        sync_sites=['unpack: x'])
    assert counts.as_dict() == dict(
        ops={
            'blocks': 4,
            'unpack': 1
        },
        syncs={'unpack': 1},
        sync_sites=['unpack: x'],
        op_names={},
        total_ops=5,
        total_syncs=1,
        outside_blocks=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_sync_debug_mode_is_counted():
    x = torch.arange(8., device='cuda')

    def fn():
        with forward_stage(OWNER, 'tokenizer'):
            x.nonzero()
            int(x.sum())
            torch.nonzero_static(x, size=8)

    counts = count_overhead(fn, device='cuda', model=OWNER)
    assert counts.syncs == {'tokenizer': 2}


# ------------------------------------------------------------------ floors
# A real photograph at 1536 x 1536 (the detection canvas), three merge
# scales (16/32/64/128 px, thresholds 2 / 2 / 0.3), 12 blocks with windows
# of 32 tokens and four global blocks; TINY widths so the forward is fast
# (the counts do not depend on the width).
FLOOR_ARCH = dict(embed_dims=32, num_layers=12, num_heads=1)
FLOOR_CFG = dict(
    img_size=1536,
    patch_size=16,
    window_size=32,
    global_attn_indexes=(2, 5, 8, 11),
    out_indices=(2, 5, 8, 11))
# APTEVA02 145, APTViT 146: the layout writes every scale's mask into its
# slots with one scatter (the per-scale strided fills cost 4 ops more).
MAX_OPS_OUTSIDE_BLOCKS = 146


def photo_1536():
    """The scikit-image astronaut on the 1536 canvas, normalised."""
    pytest.importorskip('skimage')
    from mmapt.apis.images import load_rgb, sample_photo_paths
    from mmapt.apis.views import normalise, to_canvas
    return normalise([to_canvas(load_rgb(sample_photo_paths()[0]), 1536)])


def floor_models(pack_size=None):
    """Plain EVA02, APTEVA02 (exact or static), plain ViT and APTViT."""
    from mmapt.models import APTEVA02, EVA02, APTViT, ViT
    torch.manual_seed(0)
    eva = dict(arch=dict(FLOOR_ARCH, scale_mlp=False), **FLOOR_CFG)
    vit = dict(arch=FLOOR_ARCH, num_register_tokens=2, **FLOOR_CFG)
    apt = dict(thresholds=(2, 2, 0.3), pack_size=pack_size)
    return dict(
        eva02=EVA02(**eva).eval(),
        apt_eva02=APTEVA02(**apt, **eva).eval(),
        vit=ViT(**vit).eval(),
        apt_vit=APTViT(**apt, **vit).eval())


def forward_counts(model, x):
    with torch.no_grad():
        model(x)  # caches (position tables) as at steady state
        return count_overhead(lambda: model(x), model=model)


@pytest.fixture(scope='module')
def floor_counts():
    x = photo_1536()
    counts = {
        name: forward_counts(model, x)
        for name, model in floor_models().items()
    }
    static = floor_models(pack_size=6144)
    for name in ('apt_eva02', 'apt_vit'):
        counts[f'{name}_static'] = forward_counts(static[name], x)
    for name, c in counts.items():  # pytest -s prints the table
        print(f'{name:18s} ops {c.total_ops:5d}  outside blocks '
              f'{c.outside_blocks:4d}  syncs {c.total_syncs}  '
              f'per stage {c.ops}')
    return counts


def test_plain_models_never_sync(floor_counts):
    for name in ('eva02', 'vit'):
        assert floor_counts[name].total_syncs == 0, \
            floor_counts[name].sync_sites


@pytest.mark.parametrize('name', ['apt_eva02', 'apt_vit'])
def test_apt_floor_at_1536(floor_counts, name):
    counts = floor_counts[name]
    assert counts.outside_blocks <= MAX_OPS_OUTSIDE_BLOCKS, counts.op_names
    # The one host read: the packed length and the group offsets, together.
    assert counts.total_syncs <= 1, counts.sync_sites
    assert counts.syncs.get('blocks', 0) == 0, counts.sync_sites
    # Every stage is marked (ViT has no RoPE: its context is op-free).
    for stage in ('tokenizer', 'embedding', 'blocks', 'unpack'):
        assert counts.ops.get(stage, 0) > 0


@pytest.mark.parametrize('name', ['apt_eva02', 'apt_vit'])
def test_static_mode_never_syncs(floor_counts, name):
    counts = floor_counts[f'{name}_static']
    assert counts.total_syncs == 0, counts.sync_sites
    assert counts.outside_blocks <= 2 * MAX_OPS_OUTSIDE_BLOCKS
