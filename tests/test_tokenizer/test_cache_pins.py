"""One rule for cache and graph lifetimes: every cached value a forward
takes inside a capture scope is pinned by the scope's list, so the bounded
caches (layout constants, RoPE tables, position tables) may evict it while
a graph still reads it (CPU: the capture itself needs CUDA)."""
import itertools

import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.models import APTEVA02
from mmapt.tokenizer import layout as layout_module
from mmapt.tokenizer.cache_pins import BoundedCache, pin, pin_cached_values


def _tiny_apt():
    torch.manual_seed(0)
    return APTEVA02(
        arch=dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False),
        img_size=128,
        patch_size=16,
        window_size=4,
        global_attn_indexes=(1, ),
        thresholds=(2, 2)).eval()


def _cache_values(model):
    """Every value the three kinds of cache hold now, by kind."""
    return dict(
        layout=layout_module._CONSTANTS.values(),
        rope=model.apt._rope_cache.values(),
        params=model.apt._tables.values() + model._pos_cache.values())


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _clear_caches(model):
    for cache in (layout_module._CONSTANTS, model.apt._rope_cache,
                  model.apt._tables, model._pos_cache):
        cache.clear()


def test_pin_records_only_inside_scopes():
    value = torch.ones(2)
    assert pin(value) is value  # no scope: nothing kept
    with pin_cached_values() as outer:
        with pin_cached_values() as inner:
            pin(value)
        pin('after')
    assert inner == [value] and outer == [value, 'after']


def test_bounded_cache_evicts_least_recently_used_and_pins():
    cache = BoundedCache(2)
    made = []

    def compute(name):
        made.append(name)
        return torch.tensor(len(made))

    with pin_cached_values() as pins:
        a = cache.get('a', lambda: compute('a'))
        cache.get('b', lambda: compute('b'))
        assert cache.get('a', lambda: compute('again')) is a  # a: recent
        cache.get('c', lambda: compute('c'))  # full: b goes, not a
    assert made == ['a', 'b', 'c'] and len(cache) == 2
    assert cache.values()[0] is a
    cache.get('b', lambda: compute('b'))
    assert made[-1] == 'b'  # evicted, computed again
    assert [p.item() for p in pins] == [1, 2, 1, 3]
    with pytest.raises(ValueError, match='max_entries'):
        BoundedCache(0)


def test_capture_scope_pins_what_caches_evict():
    model = _tiny_apt()
    _clear_caches(model)
    x = flat_and_noise_images(1, 128, 128, (64, 64))
    with torch.no_grad(), pin_cached_values() as pins:
        model(x)  # a capture: fills every cache
    touched = _cache_values(model)
    for kind, values in touched.items():
        assert values, f'no {kind} cache entry filled'
        for value in values:
            assert any(p is value for p in pins), f'{kind} entry not pinned'
    pinned = {id(t): (t, t.data_ptr(), t.clone()) for t in _tensors(pins)}
    assert pinned

    # More distinct input sizes than any cache keeps (layout constants 32,
    # RoPE and position tables 8): every cache evicts the captured entries.
    sizes = list(itertools.product(range(64, 449, 64), repeat=2))[:40]
    with torch.no_grad():
        for i, (height, width) in enumerate(sizes):
            model(flat_and_noise_images(1, height, width, (32, 32), i))
    now = {id(t) for t in _tensors(list(_cache_values(model).values()))}
    # Entries whose key does not depend on the input size stay (the layout
    # cache evicts least recently used first); the others are evicted.
    assert set(pinned) - now, 'the caches were meant to evict them'
    for tensor, data_ptr, values in pinned.values():
        assert tensor.data_ptr() == data_ptr  # same storage, not freed
        torch.testing.assert_close(tensor, values, rtol=0, atol=0)
