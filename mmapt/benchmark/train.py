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
import os
import random
import sys
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mmapt.benchmark.timing import StageTimer
from .analysis import build_model_pair, model_stages
from .core import Arm, get_clock, ratio, rotated


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


class TrainArm(Arm):
    """An :class:`~mmapt.benchmark.core.Arm` that trains a detector on its
    own batches, iteration by iteration: it holds the optimizer wrapper and
    the batches, and records every step it runs.

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
        super().__init__(name)
        self.model = model.train()
        self.optim_wrapper = optim_wrapper
        self.batches = batches
        self.device = device
        self.clock = clock

    def step(self,
             index: int,
             record: bool = True) -> Tuple[Dict[str, float], Optional[int]]:
        """One iteration on batch ``index``: ``(ms per part, tokens)``,
        recorded under ``index`` unless ``record`` is False (a warm-up).

        Parts: ``preprocess_ms``, ``forward_ms`` (losses), ``backward_ms``
        (backward + optimizer step + zero grad), ``iter_ms`` (all), and the
        forward's stages (``backbone_*``, ``neck_ms``) from the stage marks.
        """
        from mmapt.models.backbones import count_tokens
        model, clock = self.model, self.clock
        timer = StageTimer(self.device, clock)
        data = copy.copy(self.batches[index])
        start = clock()
        with self.optim_wrapper.optim_context(model):
            inputs = model.data_preprocessor(data, True)
        preprocessed = clock()
        with count_tokens(model.backbone) as counter, \
                timer.attach(model_stages(model)), timer.listen(model), \
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
        if record:
            self.add(index, **entry)
            self.set_tokens(index, tokens or 0, 0)
        return entry, tokens


def run_training(args, apt_cfg, base_cfg, registry,
                 device: torch.device) -> None:
    """``benchmark.py --train``: training iterations of both models of the
    config pair, interleaved; prints a summary (``--json``: one JSON line,
    ``--out``: a file)."""
    if not args.images.endswith('.json'):
        raise SystemExit('--train needs a COCO-style annotation JSON '
                         '(--images ANN.json --img-prefix IMAGE_DIR): the '
                         'losses need ground truth')
    if args.canvas:
        for cfg in (apt_cfg, base_cfg):
            shrink_canvas(cfg, args.canvas)
    apt, baseline = build_model_pair(apt_cfg, base_cfg, registry,
                                     args.checkpoint, args.seed,
                                     args.trust_checkpoint)
    clock = get_clock(args.clock, device)
    prefix = args.img_prefix or os.path.dirname(args.images)
    num_batches = args.num_images
    arms = [
        TrainArm(
            name, model.to(device),
            build_optim_wrapper(model, cfg, fp32=device.type != 'cuda'),
            train_batches(cfg, args.images, prefix, num_batches,
                          args.train_batch, args.seed), device, clock)
        for name, model, cfg in (('baseline', baseline, base_cfg), ('apt', apt,
                                                                    apt_cfg))
    ]
    records = {arm.name: arm for arm in arms}
    for arm in arms:
        for _ in range(args.warmup):
            arm.step(0, record=False)
    for rep in range(args.repeat):
        for index in range(num_batches):
            for arm in rotated(arms, rep):
                entry, tokens = arm.step(index)
                print(
                    f'[{rep + 1}/{args.repeat}] {arm.name:<10} batch '
                    f'{index} {tokens} tokens {entry["iter_ms"]:>10.0f} ms '
                    f'(forward {entry["forward_ms"]:.0f}, backward + step '
                    f'{entry["backward_ms"]:.0f})',
                    file=sys.stderr,
                    flush=True)
    totals = {name: r.totals() for name, r in records.items()}

    def speedup(key: str):
        return ratio(totals['baseline'].get(key), totals['apt'].get(key))

    summary = dict(
        mode='train',
        baseline_iter_ms=round(totals['baseline']['iter_ms'], 1),
        apt_iter_ms=round(totals['apt']['iter_ms'], 1),
        speedup=speedup('iter_ms'),
        forward_speedup=speedup('forward_ms'),
        backward_speedup=speedup('backward_ms'),
        backbone_forward_speedup=speedup('backbone_ms'),
        token_ratio=ratio(records['baseline'].total_tokens(),
                          records['apt'].total_tokens()),
        canvas=args.canvas or apt_cfg.model.backbone.img_size,
        batches=num_batches,
        train_batch=args.train_batch,
        repeat=args.repeat,
        config=args.config,
        compare=args.compare,
        device=str(device),
        clock=args.clock,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        arms={
            name:
            dict(
                total_ms={
                    k: round(v, 1)
                    for k, v in totals[name].items()
                },
                tokens=records[name].total_tokens(),
                iter_ms=[[
                    round(t, 1) for t in records[name].times(i, 'iter_ms')
                ] for i in range(num_batches)])
            for name in records
        })
    print(f'training iteration (sum over {num_batches} batches of the '
          'median): ' +
          ', '.join(f'{name} {totals[name]["iter_ms"]:.0f} ms (forward '
                    f'{totals[name]["forward_ms"]:.0f}, backward + step '
                    f'{totals[name]["backward_ms"]:.0f})'
                    for name in records) +
          f'; speed-up {summary["speedup"]}, token ratio '
          f'{summary["token_ratio"]}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(summary, f, indent=1)
    if args.json:
        print(json.dumps(summary))
