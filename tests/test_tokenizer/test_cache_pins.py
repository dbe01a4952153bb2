"""One rule for cache and graph lifetimes: every cached value a forward
takes inside a capture scope is pinned by the scope's list, so the bounded
caches (layout constants, RoPE tables, position tables) may evict it while
a graph still reads it (CPU: the capture itself needs CUDA)."""
import itertools

import torch
from conftest import flat_and_noise_images

from mmapt.models import APTEVA02
from mmapt.tokenizer import layout as layout_module
from mmapt.tokenizer.cache_pins import pin, pin_cached_values


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
        layout=list(layout_module._CONSTANTS.values()),
        rope=list(model.apt.__dict__.get('_rope_cache', {}).values()),
        params=list(model.apt._tables._store.values()) +
        list(model._pos_cache._store.values()))


def _tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _clear_caches(model):
    layout_module._CONSTANTS.clear()
    model.apt.__dict__.get('_rope_cache', {}).clear()
    model.apt._tables._store.clear()
    model._pos_cache._store.clear()


def test_pin_records_only_inside_scopes():
    value = torch.ones(2)
    assert pin(value) is value  # no scope: nothing kept
    with pin_cached_values() as outer:
        with pin_cached_values() as inner:
            pin(value)
        pin('after')
    assert inner == [value] and outer == [value, 'after']


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
