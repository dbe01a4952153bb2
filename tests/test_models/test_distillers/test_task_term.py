"""The scorer distiller's optional task term: the label maps per base cell,
and the drift target changed exactly where the labels are, off without."""
import numpy as np
import pytest
import torch
from conftest import flat_and_noise_images
from mmdet.structures import DetDataSample
from mmdet.structures.mask import BitmapMasks
from mmengine.structures import InstanceData, PixelData
from mmseg.structures import SegDataSample
from test_scorer_distiller import BACKBONE

from mmapt.models.distillers import ScorerDistiller
from mmapt.models.distillers.task_maps import (class_boundaries,
                                               object_coverage, object_ids,
                                               task_cells)


def _det_sample(boxes, masks=None) -> DetDataSample:
    instances = InstanceData()
    instances.bboxes = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
    instances.labels = torch.zeros(len(instances.bboxes), dtype=torch.long)
    if masks is not None:
        instances.masks = masks
    return DetDataSample(gt_instances=instances)


def _seg_sample(labels) -> SegDataSample:
    return SegDataSample(gt_sem_seg=PixelData(data=labels[None]))


def test_object_coverage_prefers_masks_over_boxes():
    box = _det_sample([[16, 0, 48, 16]])
    cover = object_coverage(box.gt_instances, (32, 64), torch.device('cpu'))
    assert cover.sum() == 32 * 16 and cover[:16, 16:48].all()
    mask = np.zeros((1, 20, 40), dtype=np.uint8)  # unpadded image, 20 x 40
    mask[0, 2:4, 3:8] = 1
    both = _det_sample([[16, 0, 48, 16]], BitmapMasks(mask, 20, 40))
    cover = object_coverage(both.gt_instances, (32, 64), torch.device('cpu'))
    assert cover.sum() == 10 and cover[2:4, 3:8].all()
    empty = object_coverage(
        _det_sample([]).gt_instances, (32, 64), torch.device('cpu'))
    assert not empty.any()


def test_box_coverage_centre_rule_against_the_importance_map():
    from mmapt.datasets.importance import BoxImportanceMap

    def both(box):
        sample = _det_sample([box])
        sample.set_metainfo(dict(img_shape=(32, 64)))
        results = BoxImportanceMap()(
            dict(inputs=torch.zeros(3, 32, 64), data_samples=sample))
        touched = results['data_samples'].importance_map.data[0]
        centre = object_coverage(sample.gt_instances, (32, 64),
                                 torch.device('cpu'))
        return centre, touched

    # Whole-pixel boxes: the same pixels.
    centre, touched = both([16, 0, 48, 16])
    assert torch.equal(centre, touched)
    # Fractional edges: the importance map keeps every touched pixel, the
    # coverage only those whose centre is inside (its area share).
    centre, touched = both([16.7, 0.2, 47.4, 15.6])
    assert centre.sum() == 30 * 16 and touched.sum() == 32 * 16
    assert bool((centre <= touched).all())


def test_class_boundaries_mark_both_sides_and_skip_ignored():
    labels = torch.zeros(4, 6, dtype=torch.long)
    labels[:, 3:] = 1
    labels[0, :] = 255  # ignored row: no boundary against it
    edges = class_boundaries(labels)
    want = torch.zeros(4, 6)
    want[1:, 2:4] = 1
    torch.testing.assert_close(edges, want)


def test_task_cells_per_task_and_error_without_labels():
    cpu = torch.device('cpu')
    det = task_cells([_det_sample([[0, 0, 8, 16]]),
                      _det_sample([])], (32, 32), 16, cpu)
    torch.testing.assert_close(
        det, torch.tensor([[[0.5, 0.], [0., 0.]], [[0., 0.], [0., 0.]]]))
    labels = torch.zeros(32, 32, dtype=torch.long)
    labels[20:, :] = 2  # boundary between rows 19 and 20: the lower cells
    seg = task_cells([_seg_sample(labels)], (32, 32), 16, cpu)
    torch.testing.assert_close(seg, torch.tensor([[[0., 0.], [1., 1.]]]))
    with pytest.raises(ValueError, match='add LoadAnnotations'):
        task_cells([DetDataSample()], (32, 32), 16, cpu)
    with pytest.raises(ValueError, match='needs labels'):
        task_cells(None, (32, 32), 16, cpu)


def test_object_borders_per_cell_masks_boxes_and_overlaps():
    cpu = torch.device('cpu')
    # A box over cells (0, 0) and (0, 1): its border crosses only those two
    # cells; the cells it does not touch get 0 (coverage would give the
    # inside cells their area too).
    sample = _det_sample([[4, 4, 28, 12]])
    borders = task_cells([sample], (32, 48), 16, cpu, 'borders')
    torch.testing.assert_close(borders,
                               torch.tensor([[[1., 1., 0.], [0., 0., 0.]]]))
    # A 40 x 40 object: the cell inside it has no border, its ring does.
    big = task_cells([_det_sample([[4, 4, 44, 44]])], (48, 48), 16, cpu,
                     'borders')
    assert big[0, 1, 1] == 0 and big.sum() == 8
    # Masks win over boxes; touching objects are told apart.
    mask = np.zeros((2, 16, 16), dtype=np.uint8)
    mask[0, :, :8] = 1
    mask[1, :, 8:] = 1
    two = _det_sample([[0, 0, 16, 16]] * 2, BitmapMasks(mask, 16, 16))
    ids = object_ids(two.gt_instances, (16, 32), cpu)
    assert torch.equal(ids[:, :8], torch.ones(16, 8, dtype=torch.long))
    assert torch.equal(ids[:, 8:16], torch.full((16, 8), 2))
    assert not ids[:, 16:].any()
    edges = class_boundaries(ids)
    assert edges[:, 7:9].all() and edges[:, 15:17].all()
    assert edges.sum() == 4 * 16
    with pytest.raises(ValueError, match="task_map must be None, 'cover"):
        task_cells([sample], (32, 48), 16, cpu, 'boxes')
    with pytest.raises(ValueError, match="'coverage' needs object labels"):
        task_cells([_seg_sample(torch.zeros(32, 32, dtype=torch.long))],
                   (32, 32), 16, cpu, 'coverage')
    with pytest.raises(ValueError, match='task_map must be'):
        ScorerDistiller(BACKBONE, task_weight=1., task_map='area')


def _images():
    return flat_and_noise_images(2, 128, 128, (64, 64), seed=0)


def test_task_term_changes_the_target_only_where_the_labels_are():
    torch.manual_seed(0)
    plain = ScorerDistiller(BACKBONE, scorer=dict(channels=8)).eval()
    task = ScorerDistiller(
        BACKBONE, scorer=dict(channels=8), task_weight=3.).eval()
    task.load_state_dict(plain.state_dict())
    x = _images()
    # Image 0: an object over the top-left 32 x 32 patch; image 1: none.
    samples = [_det_sample([[0, 0, 32, 32]]), _det_sample([])]
    assert plain.task_map(x, samples) is None  # label-free: labels unread
    want = plain.drift_targets(x)
    got = task.drift_targets(x, task.task_map(x, samples))
    # 32-px patch (0, 0) is all object: its drift doubles (sqrt(1 + 3)).
    torch.testing.assert_close(got[0][0, 0, 0], 2 * want[0][0, 0, 0])
    changed = ~torch.isclose(got[0], want[0])
    assert changed.sum() == 1 and changed[0, 0, 0]
    # The 64-px patch holding it (a quarter covered): more, at most doubled;
    # the rest, and the image without objects, unchanged.
    assert want[1][0, 0, 0] < got[1][0, 0, 0] < 2 * want[1][0, 0, 0]
    torch.testing.assert_close(got[1][1], want[1][1])
    torch.testing.assert_close(got[1][0, 1:], want[1][0, 1:])
    # The losses differ by the target only: same scorer, same images.
    assert plain(
        x, samples, mode='loss')['loss'] != task(
            x, samples, mode='loss')['loss']
    torch.testing.assert_close(
        plain(x, samples, mode='loss')['loss'],
        plain(x, None, mode='loss')['loss'])


def test_task_term_needs_labels_and_a_valid_weight():
    task = ScorerDistiller(
        BACKBONE, scorer=dict(channels=8), task_weight=1.).eval()
    with pytest.raises(ValueError, match='task_weight > 0 needs labels'):
        task(_images(), None, mode='loss')
    with pytest.raises(ValueError, match='task_weight must be >= 0'):
        ScorerDistiller(BACKBONE, task_weight=-1.)


@pytest.mark.parametrize(
    'name',
    ['toy_learned_scorer_coco_task.py', 'toy_learned_scorer_ade_task.py'])
def test_task_configs_load_labels_and_differ_only_by_the_term(name):
    import os.path as osp

    from conftest import ROOT
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'toy', name))
    base = Config.fromfile(
        osp.join(ROOT, 'configs', 'toy', name.replace('_task', '')))
    assert cfg.model.task_weight > 0 and 'task_weight' not in base.model
    steps = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    base_steps = [t['type'] for t in base.train_dataloader.dataset.pipeline]
    assert steps == base_steps[:1] + ['LoadAnnotations'] + base_steps[1:]
    assert cfg.model.backbone == base.model.backbone
    assert cfg.train_cfg == base.train_cfg


def test_borders_config_is_the_task_config_with_borders():
    import os.path as osp

    from conftest import ROOT
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmapt.registry import MODELS
    toy = osp.join(ROOT, 'configs', 'toy')
    cfg = Config.fromfile(osp.join(toy, 'toy_learned_scorer_coco_borders.py'))
    task = Config.fromfile(osp.join(toy, 'toy_learned_scorer_coco_task.py'))
    assert cfg.model.task_map == 'borders' and 'task_map' not in task.model
    cfg.model.pop('task_map')
    assert cfg.model == task.model
    assert cfg.train_dataloader == task.train_dataloader
    init_default_scope(cfg.default_scope)
    model = MODELS.build(dict(task.model, task_map='borders'))
    assert model.task_map_kind == 'borders' and model.task_weight == 3.
