"""Every APT forward checks the input size once (the tokenizer's check,
which also resolves the token budget once), and the check's errors name
the fix; the host's own check is for its dense forward only."""
import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.models import APTEVA02
from mmapt.tokenizer import tokenizer as tokenizer_module

TINY = dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False)


def _model(**kwargs):
    torch.manual_seed(0)
    cfg = dict(
        arch=TINY,
        img_size=256,
        patch_size=16,
        window_size=4,
        global_attn_indexes=(1, ),
        thresholds=(2, 2))
    cfg.update(kwargs)
    return APTEVA02(**cfg).eval()


def _count_checks(model, monkeypatch):
    """Counters of the input checks and budget resolutions the model
    makes (wrapped on this model's objects only)."""
    calls = dict(tokenizer=0, host=0, budget=0)
    tokenizer = model.apt.tokenizer

    def counted(name, fn):

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(tokenizer, 'check_input_size',
                        counted('tokenizer', tokenizer.check_input_size))
    monkeypatch.setattr(model, 'check_input_size',
                        counted('host', model.check_input_size))
    monkeypatch.setattr(tokenizer_module, 'resolve_budget',
                        counted('budget', tokenizer_module.resolve_budget))
    return calls


@pytest.mark.parametrize('settings', [
    dict(),
    dict(pack_size=256),
    dict(pack_size=[64, 128, 256]),
    dict(keep_ratio=0.5),
    dict(keep_ratio=0.5, pack_size=[64, 128, 256]),
    dict(keep_ratio=0.5, pack_size=100),
])
def test_one_check_and_one_budget_per_forward(settings, monkeypatch):
    model = _model(**settings)
    calls = _count_checks(model, monkeypatch)
    x = flat_and_noise_images(2, 256, 192, (64, 64))
    with torch.no_grad():
        model(x)
        first = dict(calls)
        model(x)
    assert first == dict(
        tokenizer=1, host=0, budget=int('keep_ratio' in settings))
    assert calls == {name: 2 * n for name, n in first.items()}


def test_select_pack_size_checks_once(monkeypatch):
    model = _model(pack_size=[64, 128, 256])
    calls = _count_checks(model, monkeypatch)
    x = flat_and_noise_images(1, 256, 256, (64, 64))
    assert model.apt.select_pack_size(x) in (64, 128, 256)
    assert calls == dict(tokenizer=1, host=0, budget=0)
    model.apt.select_pack_size(x, buckets=[256])  # one bucket: still checked
    assert calls['tokenizer'] == 2


@pytest.mark.parametrize('settings, size, message', [
    (dict(), (256, 200), 'must be a multiple of 64'),
    (dict(pack_size=256), (72, 64), 'pad_size_divisor=64'),
    (dict(token_budget=3), (256, 256), 'token_budget >= 16'),
])
def test_the_check_names_the_fix(settings, size, message):
    model = _model(**settings)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(1, 3, *size))


def test_window_not_a_multiple_of_the_largest_patch():
    with pytest.raises(ValueError, match='multiple of the largest patch'):
        _model(window_size=6)


@pytest.mark.parametrize('window', [0, 4])
def test_window_size_passes_unchanged_to_the_layout(window):
    """The config's value (0 = global attention, as the configs and ViTDet
    spell it) reaches the tokenizer and its layouts as it is."""
    from mmapt.registry import MODELS
    model = MODELS.build(
        dict(
            type='APTEVA02',
            arch=TINY,
            img_size=256,
            window_size=window,
            global_attn_indexes=(1, ),
            thresholds=(2, 2)))
    assert model.window_size == window
    assert model.apt.tokenizer.window_size == window
    layout = model.tokenize(flat_and_noise_images(1, 256, 256, (64, 64)))
    assert layout.window_size == window
    assert (layout.cu_seqlens_window is layout.cu_seqlens_image) == (
        window == 0)


def test_negative_window_is_refused():
    with pytest.raises(ValueError, match='window_size must be >= 0'):
        _model(window_size=-4)
