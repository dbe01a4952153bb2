"""``accelerate``: compiled (inductor, CPU here) inference forwards equal
eager ones with one graph per shape key and no recompilation; token counts
still reach observers; CUDA graphs on a CPU say so once and run eager;
training is untouched."""
import copy
import logging

import pytest
import torch
from conftest import flat_and_noise_images
from mmengine.logging import MMLogger
from torch._dynamo.utils import counters

from mmapt.models import APTEVA02, EVA02, APTViT
from mmapt.models.backbones import count_tokens

TINY = dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False)
CFG = dict(
    arch=TINY,
    img_size=128,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1))


def _eva02(**kwargs):
    torch.manual_seed(0)
    return EVA02(**CFG, **kwargs).eval()


def _assert_maps_equal(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _counted(model, x):
    with count_tokens(model) as counter:
        outs = model(x)
    return outs, counter.per_image()


@pytest.fixture
def warnings_of_mmlogger():
    lines = []

    class Collect(logging.Handler):

        def emit(self, record):
            lines.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = Collect(level=logging.WARNING)
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def _compare(eager, accelerated, x):
    """Accelerated maps and token counts equal eager ones; the counts
    reach the observer once per call."""
    want, want_tokens = _counted(eager, x)
    got, got_tokens = _counted(accelerated, x)
    _assert_maps_equal(got, want)
    assert got_tokens['calls'] == 1
    torch.testing.assert_close(got_tokens['tokens'], want_tokens['tokens'])


def test_plain_compiled_equals_eager_without_recompiling():
    eager, compiled = _eva02(), _eva02(accelerate='compile')
    images = [flat_and_noise_images(2, 128, 192, (64, 64), s) for s in (0, 1)]
    graphs = counters['stats']['unique_graphs']
    with torch.no_grad():
        _compare(eager, compiled, images[0])
        with torch._dynamo.config.patch(error_on_recompile=True):
            _compare(eager, compiled, images[1])
    assert counters['stats']['unique_graphs'] - graphs == 1
    accelerator = compiled.accelerator()
    assert len(accelerator.runners) == 1 and accelerator.build_seconds


def _photos(num, canvas):
    """The first ``num`` sample photographs on the detection canvas."""
    pytest.importorskip('skimage')
    from mmapt.apis.images import load_rgb, sample_photo_paths
    from mmapt.apis.views import normalise, to_canvas
    paths = sample_photo_paths()[:num]
    return [normalise([to_canvas(load_rgb(p), canvas)]) for p in paths]


def _apt(cls=APTEVA02, **kwargs):
    torch.manual_seed(0)
    arch = TINY if cls is APTEVA02 else dict(
        embed_dims=32, num_layers=2, num_heads=1)
    cfg = dict(CFG, arch=arch, img_size=256, thresholds=(2, 2))
    return cls(**cfg, **kwargs).eval()


@pytest.mark.slow  # compiling the tokenizer too: ~100 s on a shared CPU
def test_apt_compiled_equals_eager_over_photos_of_one_bucket():
    eager, compiled = _apt(), _apt(accelerate='compile')
    compiled.load_state_dict(eager.state_dict())
    photos = _photos(5, 256)
    with torch.no_grad():
        buckets = {compiled.apt.select_pack_size(x) for x in photos}
    assert len(buckets) == 1  # the default buckets: one for all five
    graphs = counters['stats']['unique_graphs']
    with torch.no_grad():
        _compare(eager, compiled, photos[0])  # compiles
        with torch._dynamo.config.patch(error_on_recompile=True):
            for x in photos[1:]:
                _compare(eager, compiled, x)
    assert counters['stats']['unique_graphs'] - graphs == 1
    (key, ) = compiled.accelerator().runners
    assert key[0][:2] == ('apt', buckets.pop())


@pytest.mark.slow
def test_apt_vit_compiled_per_bucket_equals_eager():
    # Prefix tokens, two buckets (a flat image needs the smallest).
    eager = _apt(APTViT, num_register_tokens=2)
    compiled = _apt(APTViT, num_register_tokens=2, accelerate='compile')
    compiled.load_state_dict(eager.state_dict())
    flat = torch.zeros(1, 3, 256, 256)
    noise = flat_and_noise_images(2, 256, 256, (0, 0))[:1]  # no flat box
    with torch.no_grad():
        for x in (flat, noise):
            _compare(eager, compiled, x)
    assert len(compiled.accelerator().runners) == 2


def test_cuda_graphs_on_cpu_log_once_and_run_eager(warnings_of_mmlogger):
    eager, graphed = _eva02(), _eva02(accelerate='cuda_graphs')
    x = flat_and_noise_images(1, 128, 128, (64, 64))
    with torch.no_grad():
        for _ in range(2):
            _assert_maps_equal(graphed(x), eager(x))
    said = [m for m in warnings_of_mmlogger if 'cuda_graphs' in m]
    assert len(said) == 1 and 'running eager' in said[0]
    assert not graphed.accelerator().runners


def test_training_and_autograd_stay_eager():
    model = _eva02(accelerate='compile').train()
    x = flat_and_noise_images(1, 64, 64, (32, 32))
    model(x)[-1].sum().backward()  # training: eager, gradients flow
    assert model.pos_embed.grad is not None
    model.eval()
    model(x)  # autograd on: eager too
    assert not model.accelerator().runners


def test_bad_value_names_the_choices():
    with pytest.raises(ValueError, match="'compile', 'cuda_graphs'"):
        _eva02(accelerate='fast')
    model = _eva02()
    with pytest.raises(ValueError, match='accelerate must be'):
        model.accelerate = True


def test_copies_start_without_compiled_forwards():
    model = _eva02(accelerate='compile')
    model.accelerator().runners['fake'] = None  # as if one were made
    twin = copy.deepcopy(model)
    assert twin.accelerate == 'compile' and not twin.accelerator().runners
    model.to(torch.float64)  # new weights: the forwards are dropped
    assert model.accelerator().runners == {}
