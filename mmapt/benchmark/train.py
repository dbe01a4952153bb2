"""A training iteration of a whole detector, as ``tools/train.py`` runs it.

The config's own train dataset and pipeline make the batches (one set per
config, drawn with the same seeds, so identical pipelines give identical
crops), the model's data preprocessor pads them, and one iteration is the
data preprocessor, the loss forward, the backward and the optimizer step of
the config's optimizer wrapper (its constructor and layer decay included).
mmdet / mmseg are imported inside the functions only.
"""
import copy
import json
import random
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mmapt.benchmark.timing import StageTimer, module_stage


def shrink_canvas(cfg, canvas: int) -> None:
    """Rewrite a detection config for a ``canvas`` x ``canvas`` training
    canvas: the data preprocessor's padding and fixed-size batch pad, the
    backbone's ``img_size`` and every train-pipeline size equal to the old
    canvas (LSJ's resize scale and crop size)."""
    old = cfg.model.backbone.img_size
    new = (canvas, canvas)
    pre = cfg.model.data_preprocessor
    if 'pad_size_divisor' in pre:
        pre.pad_size_divisor = canvas
    for augment in pre.get('batch_augments') or []:
        if 'size' in augment:
            augment.size = new
    cfg.model.backbone.img_size = canvas
    for transform in train_pipeline_of(cfg):
        for key in ('scale', 'crop_size', 'img_scale'):
            value = transform.get(key)
            if value is not None and tuple(value) == (old, old):
                transform[key] = new


def train_dataset_cfg(cfg):
    dataset = cfg.train_dataloader.dataset
    while 'dataset' in dataset and 'pipeline' not in dataset:
        dataset = dataset.dataset  # RepeatDataset / ClassBalanced wrappers
    return dataset


def train_pipeline_of(cfg) -> list:
    return train_dataset_cfg(cfg).pipeline


def train_batches(cfg,
                  ann_file: str,
                  img_prefix: str,
                  num_batches: int,
                  batch_size: int = 1,
                  seed: int = 0) -> List[dict]:
    """``num_batches`` collated batches from the config's train dataset
    (its pipeline, random transforms included) on another annotation file;
    the random state is seeded before every sample."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS
    dataset_cfg = copy.deepcopy(train_dataset_cfg(cfg))
    # The file's own categories (e.g. the toy set's shapes under a COCO
    # config): speed does not depend on the class names, only on the
    # instances being kept.
    with open(ann_file) as f:
        classes = tuple(c['name'] for c in json.load(f)['categories'])
    dataset_cfg.update(
        data_root='',
        ann_file=ann_file,
        data_prefix=dict(img=img_prefix),
        metainfo=dict(classes=classes))
    dataset = DATASETS.build(dataset_cfg)
    if len(dataset) < num_batches * batch_size:
        raise SystemExit(f'{ann_file}: {len(dataset)} training images, '
                         f'{num_batches * batch_size} needed (--num-images)')
    batches = []
    for b in range(num_batches):
        samples = []
        for i in range(b * batch_size, (b + 1) * batch_size):
            seed_everything(seed + i)
            samples.append(dataset[i])
        batches.append(pseudo_collate(samples))
    return batches


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optim_wrapper(model: nn.Module, cfg, fp32: bool = True):
    """The config's optimizer wrapper; with ``fp32`` an AMP wrapper becomes
    a plain one (mmengine's AMP wrapper needs CUDA)."""
    from mmengine.optim import build_optim_wrapper as build
    wrapper = copy.deepcopy(cfg.optim_wrapper)
    if fp32 and wrapper.get('type') == 'AmpOptimWrapper':
        wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype'):
            wrapper.pop(key, None)
    return build(model, wrapper)


class TrainArm:
    """One detector training on its own batches, iteration by iteration.

    Args:
        name (str): The arm's name.
        model (nn.Module): The detector (put in train mode).
        optim_wrapper: Its optimizer wrapper.
        batches (list): Collated batches (from :func:`train_batches`).
        device (torch.device): Where it runs.
        clock (Callable): Host clock (CUDA: synchronized stage boundaries).
    """

    def __init__(self, name: str, model: nn.Module, optim_wrapper,
                 batches: List[dict], device: torch.device,
                 clock: Callable[[], float]) -> None:
        self.name = name
        self.model = model.train()
        self.optim_wrapper = optim_wrapper
        self.batches = batches
        self.device = device
        self.clock = clock

    def step(self, index: int) -> Tuple[Dict[str, float], Optional[int]]:
        """One iteration on batch ``index``: ``(ms per part, tokens)``.

        Parts: ``preprocess_ms``, ``forward_ms`` (losses), ``backward_ms``
        (backward + optimizer step + zero grad), ``iter_ms`` (all), and the
        forward's stages (``backbone_*``, ``neck_ms``) from the stage marks.
        """
        from mmapt.models.backbones import count_tokens
        model, clock = self.model, self.clock
        timer = StageTimer(self.device, clock)
        stages = [module_stage('backbone_rest', model.backbone)]
        if getattr(model, 'neck', None) is not None:
            stages.append(module_stage('neck', model.neck))
        data = copy.copy(self.batches[index])
        start = clock()
        with self.optim_wrapper.optim_context(model):
            inputs = model.data_preprocessor(data, True)
        preprocessed = clock()
        with count_tokens(model.backbone) as counter, \
                timer.attach(stages), timer.listen(model), \
                self.optim_wrapper.optim_context(model):
            losses = model(**inputs, mode='loss')
        loss, _ = model.parse_losses(losses)
        forwarded = clock()
        self.optim_wrapper.update_params(loss)
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        done = clock()
        stage_ms = timer.reset()
        counts = counter.per_image()
        tokens = int(counts['tokens'].sum()) if counts else None
        entry = dict(
            preprocess_ms=(preprocessed - start) * 1e3,
            forward_ms=(forwarded - preprocessed) * 1e3,
            backward_ms=(done - forwarded) * 1e3,
            iter_ms=(done - start) * 1e3,
            backbone_ms=sum(v for k, v in stage_ms.items() if k != 'neck'),
            **{
                f'{k}_ms': v
                for k, v in stage_ms.items()
            })
        return entry, tokens
