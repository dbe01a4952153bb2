"""The overhead counter (mmapt.utils.overhead) on functions whose ops and
host syncs are known, and the floors APT's forward must stay under."""
import os

import pytest
import torch

from mmapt.utils.overhead import OverheadCounts, count_overhead
from mmapt.utils.stages import forward_stage


def test_counts_ops_per_stage_innermost_mark_wins():
    x = torch.arange(10.)

    def fn():
        x.add(1)  # other: 1
        with forward_stage('tokenizer'):
            y = x.mul(2)  # tokenizer: 1
            y.view(2, 5)  # a view is an op too
            with forward_stage('embedding'):
                y.sub(1)
                y.neg()
            y.exp()

    counts = count_overhead(fn)
    assert counts.ops == {'other': 1, 'tokenizer': 3, 'embedding': 2}
    assert counts.syncs == {} and counts.sync_sites == []
    assert counts.total_ops == 6 and counts.total_syncs == 0
    assert counts.outside_blocks == 6


def test_blocks_are_not_outside_blocks():
    x = torch.ones(3)

    def fn():
        with forward_stage('blocks'):
            x.add(1).add(2)
        x.add(3)

    counts = count_overhead(fn)
    assert counts.ops == {'blocks': 2, 'other': 1}
    assert counts.outside_blocks == 1


def test_python_reads_count_once_each():
    x = torch.arange(6.)

    def fn():
        with forward_stage('context'):
            int(x.sum())  # sum + _local_scalar_dense: one read
            x.tolist()
            x[1].item()
            float(x.max())
            bool(x.any())
            range(10)[torch.tensor(2)]  # __index__
            x.numpy()

    counts = count_overhead(fn)
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
        with forward_stage('tokenizer'):
            mask.nonzero()
            x[mask]
            x.masked_select(mask)
            torch.unique(x)
            torch.repeat_interleave(repeats)
            torch.bincount(repeats)
        with forward_stage('embedding'):
            torch.nonzero_static(mask, size=4)
            torch.repeat_interleave(repeats, output_size=3)
            x.cumsum(0)
            torch.searchsorted(x.sort().values, x)
            x.index_select(0, repeats)

    counts = count_overhead(fn)
    assert counts.syncs == {'tokenizer': 6}
    assert counts.ops['tokenizer'] >= 6
    assert counts.ops['embedding'] >= 5


def test_as_dict_and_dataclass():
    counts = OverheadCounts(ops={'blocks': 4, 'unpack': 1}, syncs={'unpack': 1},
                            sync_sites=['unpack: x'])
    assert counts.as_dict() == dict(
        ops={'blocks': 4, 'unpack': 1},
        syncs={'unpack': 1},
        sync_sites=['unpack: x'],
        total_ops=5,
        total_syncs=1,
        outside_blocks=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_sync_debug_mode_is_counted():
    x = torch.arange(8., device='cuda')

    def fn():
        with forward_stage('tokenizer'):
            x.nonzero()
            int(x.sum())
            torch.nonzero_static(x, size=8)

    counts = count_overhead(fn, device='cuda')
    assert counts.syncs == {'tokenizer': 2}
