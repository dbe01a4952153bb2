"""Per-instance observers (mmapt.models.observers): attention calls and the
attention backend belong to one model; handles detach cleanly; a compiled
forward with observers attached still runs as one graph."""
import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.models import APTEVA02
from mmapt.models.layers.attention import (attention_backend,
                                           count_attention_calls)
from mmapt.models.stages import listen_stages, stages_unmarked

TINY = dict(embed_dims=32, num_layers=2, num_heads=1, scale_mlp=False)
CFG = dict(
    img_size=128,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1),
    thresholds=(2, 2))


def _model(**kwargs):
    torch.manual_seed(0)
    return APTEVA02(arch=TINY, **CFG, **kwargs).eval()


def _image():
    return flat_and_noise_images(1, 128, 128, (64, 64), 0)


def test_attention_calls_are_counted_per_model():
    observed, other = _model(), _model()
    x = _image()
    with torch.no_grad(), count_attention_calls(observed) as counts:
        other(x)
        assert not any(counts.values())
        observed(x)
    # Two blocks, one packed attention call each; the CPU runs the plan.
    assert counts['padded'] == 2 and counts['varlen'] == 0
    assert not observed._attention_observers  # detached on exit
    with torch.no_grad(), count_attention_calls(other) as again:
        observed(x)
    assert not any(again.values())


def test_observer_handle_removes_cleanly():
    model = _model()
    calls = []
    handle = model.register_attention_observer(
        lambda kernel, q, cu: calls.append((kernel, q.shape[1], cu.numel())))
    with torch.no_grad():
        model(_image())
    assert [c[0] for c in calls] == ['padded', 'padded']
    assert all(heads == 1 for _, heads, _ in calls)
    handle.remove()
    handle.remove()  # twice is harmless
    with torch.no_grad():
        model(_image())
    assert len(calls) == 2
    with pytest.raises(TypeError, match='must be callable'):
        model.register_attention_observer(None)
    with pytest.raises(TypeError, match='packed attention calls'):
        with count_attention_calls(torch.nn.Linear(2, 2)):
            pass


def test_backend_is_read_where_the_forward_runs():
    """The scoped choice reaches the plans of the next forward; the
    other model keeps its own."""
    static, other = _model(pack_size=256), _model(pack_size=256)
    x = _image()
    with torch.no_grad(), attention_backend(static, 'padded'), \
            count_attention_calls(static) as counts:
        static(x)
        assert static.apt.packed_context(
            static.tokenize(x)).image.backend == 'padded'
        assert other.apt.packed_context(
            other.tokenize(x)).image.backend == 'auto'
    assert counts['static_sdpa'] == 2
    assert static.attention_backend == 'auto'


def test_compiled_forward_with_observers_is_one_graph():
    """What ``accelerate='compile'`` does (stage marks unheard inside the
    region): with a stage listener and an attention counter attached, the
    static forward compiles whole (fullgraph: a graph break is an error)
    and the counter still hears every call."""
    static = _model(pack_size=256)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(static, fullgraph=True, backend=backend)
    events = []
    x = _image()
    torch._dynamo.reset()
    try:
        with torch.no_grad(), \
                listen_stages(static, lambda n, e: events.append(n)), \
                count_attention_calls(static) as counts, \
                stages_unmarked(static):
            want = static(x)
            for _ in range(2):
                got = compiled(x)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    assert events == []
    assert counts['static_sdpa'] == 3 * 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
