"""Stage marks of the backbone forwards (mmapt.models.stages)."""
import pytest
import torch

from mmapt.models import APTEVA02, EVA02
from mmapt.models.stages import STAGES, forward_stage, listen_stages

TINY = dict(embed_dims=64, num_layers=2, num_heads=2)


def _record(model, x):
    events = []
    with listen_stages(lambda name, entering: events.append((name, entering))):
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
    with listen_stages(lambda name, entering: None):
        with pytest.raises(ValueError, match='unknown stage'):
            with forward_stage('tokeniser'):
                pass


def test_marks_cost_nothing_without_listeners():
    with forward_stage('not-a-stage'):  # not even checked: no listener
        pass
