"""Stage marks of the backbone forwards (mmapt.models.stages)."""
import pytest
import torch
from conftest import marked_module

from mmapt.models import APTEVA02, EVA02
from mmapt.models.stages import (STAGES, forward_stage, listen_stages,
                                 observe_stages, stages_unmarked)

TINY = dict(embed_dims=64, num_layers=2, num_heads=2)


def _record(model, x):
    events = []

    def listener(name, entering):
        events.append((name, entering))

    with listen_stages(model, listener):
        model(x)
    return events


def test_apt_forward_marks_every_stage_in_order():
    model = APTEVA02(
        arch=TINY,
        img_size=128,
        window_size=4,
        global_attn_indexes=(1, ),
        thresholds=(2., 2.)).eval()
    events = _record(model, torch.randn(1, 3, 128, 128))
    entered = [name for name, entering in events if entering]
    assert entered == list(STAGES)
    # Every stage that opens also closes.
    assert sorted(events) == sorted((n, not e) for n, e in events)


def test_plain_forward_marks_embedding_blocks_unpack():
    model = EVA02(arch=TINY, img_size=64, out_indices=(0, 1)).eval()
    entered = [n for n, e in _record(model, torch.randn(1, 3, 64, 64)) if e]
    # One 'unpack' per output map (nested in 'blocks'), then the token
    # report, in 'unpack' as in the APT adapter.
    assert entered == ['embedding', 'blocks', 'unpack', 'unpack', 'unpack']


def test_unknown_stage_name_is_refused_while_listening():
    owner = marked_module()
    with listen_stages(owner, lambda name, entering: None):
        with pytest.raises(ValueError, match='unknown stage'):
            with forward_stage(owner, 'tokeniser'):
                pass


def test_marks_cost_nothing_without_listeners():
    owner = marked_module()
    with forward_stage(owner, 'not-a-stage'):  # not even checked
        pass
    # An object that cannot have listeners marks nothing either.
    with forward_stage(torch.nn.Linear(1, 1), 'not-a-stage'):
        pass


def test_listeners_belong_to_one_model():
    """Two models in one process: only the observed one is heard, and the
    handle detaches its listener cleanly."""
    observed = EVA02(arch=TINY, img_size=64, out_indices=(1, )).eval()
    other = EVA02(arch=TINY, img_size=64, out_indices=(1, )).eval()
    x = torch.randn(1, 3, 64, 64)
    events = []
    handle = observe_stages(observed, lambda n, e: events.append(n))
    assert len(handle) == 1
    other(x)
    assert events == []
    observed(x)
    assert events[:2] == ['embedding', 'embedding']
    handle.remove()
    assert not observed._stage_listeners
    events.clear()
    observed(x)
    assert events == []


def test_listening_to_a_whole_model_finds_its_backbone():
    """A detector-like wrapper: the listener reaches the backbone inside."""
    backbone = EVA02(arch=TINY, img_size=64, out_indices=(1, )).eval()
    wrapper = torch.nn.Sequential(backbone)
    events = []
    with listen_stages(wrapper, lambda n, e: events.append((n, e))):
        wrapper(torch.randn(1, 3, 64, 64))
    assert ('blocks', True) in events and ('blocks', False) in events
    assert not backbone._stage_listeners
    with pytest.raises(TypeError, match='reports forward stages'):
        observe_stages(torch.nn.Linear(2, 2), lambda n, e: None)
    with pytest.raises(TypeError, match='must be callable'):
        backbone.register_stage_listener('not a function')


def test_stages_unmarked_mutes_one_model_only():
    first, second = marked_module(), marked_module()
    heard = []
    with listen_stages(first, lambda n, e: heard.append(('first', n))), \
            listen_stages(second, lambda n, e: heard.append(('second', n))):
        with stages_unmarked(first):
            with forward_stage(first, 'blocks'), \
                    forward_stage(second, 'unpack'):
                pass
        with forward_stage(first, 'tokenizer'):
            pass
    assert heard == [('second', 'unpack'), ('second', 'unpack'),
                     ('first', 'tokenizer'), ('first', 'tokenizer')]
