"""The visualizer backend switch of ``configs/_base_/default_runtime.py``:
by default the configs log through LocalVisBackend alone;
``MMAPT_VIS_BACKENDS=LocalVisBackend,TensorboardVisBackend`` adds
TensorBoard (``pip install .[vis]``), and the visualizer built from the
config then writes a scalar to both the JSON log and a TensorBoard event
file."""
import glob
import json
import os.path as osp
import uuid

import pytest
from conftest import ROOT
from mmengine.config import Config

CONFIGS = ['configs/toy/toy_apt_det.py', 'configs/toy/toy_apt_seg.py']
SWITCH = 'MMAPT_VIS_BACKENDS'


def _load(name):
    return Config.fromfile(osp.join(ROOT, name), import_custom_modules=False)


@pytest.mark.parametrize('name', CONFIGS)
def test_default_is_the_local_backend_alone(name, monkeypatch):
    monkeypatch.delenv(SWITCH, raising=False)
    cfg = _load(name)
    assert cfg.visualizer.vis_backends == [dict(type='LocalVisBackend')]


@pytest.mark.parametrize('name', CONFIGS)
def test_tensorboard_switch_writes_a_scalar(name, monkeypatch, tmp_path):
    pytest.importorskip('tensorboard')
    monkeypatch.setenv(SWITCH, 'LocalVisBackend,TensorboardVisBackend')
    cfg = _load(name)
    assert [b['type'] for b in cfg.visualizer.vis_backends
            ] == ['LocalVisBackend', 'TensorboardVisBackend']
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import VISUALIZERS
    else:
        from mmseg.registry import VISUALIZERS
    visualizer = VISUALIZERS.build(
        dict(
            cfg.visualizer,
            save_dir=str(tmp_path),
            name=f'vis-switch-{uuid.uuid4().hex}'))
    assert type(visualizer).__name__ == cfg.visualizer.type
    visualizer.add_scalars(dict(loss=0.25, keep_ratio=0.5), step=7)
    tensorboard = visualizer.get_backend('TensorboardVisBackend')
    tensorboard.experiment.flush()

    # The JSON log (what tools/analysis/analyze_logs.py reads) ...
    (scalars, ) = glob.glob(
        str(tmp_path / '**' / 'scalars.json'), recursive=True)
    with open(scalars) as f:
        assert json.loads(f.readline()) == dict(
            loss=0.25, keep_ratio=0.5, step=7)
    # ... and the TensorBoard events, read back with tensorboard's reader.
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    (events, ) = glob.glob(
        str(tmp_path / '**' / 'events.out.tfevents.*'), recursive=True)
    accumulator = EventAccumulator(events)
    accumulator.Reload()
    (event, ) = accumulator.Scalars('keep_ratio')
    assert (event.step, event.value) == (7, 0.5)
    visualizer.close()
