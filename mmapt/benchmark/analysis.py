"""Shared steps of the config-driven analysis tools (benchmark, FLOPs).

An APT config and its plain baseline are built as mmdet or mmseg models
holding the same weights, and images are run through a config's own test
pipeline. mmdet / mmseg / mmcv are imported inside the functions, so
this module stays importable with torch and mmengine only.
"""
import argparse
import copy
import json
import logging
import os
from typing import List, Optional, Tuple

import torch
from torch import nn

from mmapt.apis.images import list_images
from mmapt.apis.tool_args import add_num_images_argument
from mmapt.engine.preflight import add_cfg_options


def add_model_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """What the config-driven tools read (:func:`load_config_pair`,
    :func:`image_paths`): the APT ``config``, its baseline ``--compare``,
    the images (``--images``, ``--img-prefix``, ``--num-images``) and
    ``--cfg-options`` for both configs."""
    parser.add_argument('config', help='APT config')
    parser.add_argument(
        '--compare', required=True, help='baseline config (the plain model)')
    parser.add_argument(
        '--images',
        required=True,
        help='folder of images, one image, or a COCO-style '
        'annotation JSON (its images[].file_name, relative '
        'to --img-prefix)')
    parser.add_argument(
        '--img-prefix',
        default=None,
        help='folder of the JSON\'s images (default: the '
        'JSON\'s folder)')
    add_num_images_argument(parser, default=5)
    add_cfg_options(parser, 'both configs')


def load_config(path: str, options: Optional[dict] = None):
    """``Config.fromfile`` + ``--cfg-options`` + the config's custom
    imports."""
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def load_config_pair(apt_path: str,
                     base_path: str,
                     options: Optional[dict] = None):
    """Both configs and the model registry of their (common) scope."""
    apt_cfg = load_config(apt_path, options)
    base_cfg = load_config(base_path, options)
    scope = apt_cfg.get('default_scope')
    if base_cfg.get('default_scope') != scope:
        raise SystemExit(f'{apt_path} ({scope}) and {base_path} '
                         f'({base_cfg.get("default_scope")}) are not the same '
                         'task')
    return apt_cfg, base_cfg, model_registry(scope)


def model_registry(scope: str):
    """mmdet's or mmseg's MODELS, with that scope as the default one."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    else:
        raise SystemExit(f'default_scope {scope!r}: the analysis tools take '
                         'mmdet or mmseg configs')
    register_all_modules(init_default_scope=True)
    return MODELS


def test_pipeline(cfg) -> list:
    """The config's test pipeline without annotation loading."""
    pipeline = cfg.get('test_pipeline') or \
        cfg.test_dataloader.dataset.pipeline
    return [
        copy.deepcopy(t) for t in pipeline
        if not t['type'].startswith('LoadAnnotations')
        and t['type'] != 'LoadSegAnnotations'
    ]


def image_paths(images: str,
                num: Optional[int] = None,
                img_prefix: Optional[str] = None) -> List[str]:
    """A folder or file of images, or a COCO-style annotation JSON (its
    ``images[].file_name`` under ``img_prefix``, default the JSON's
    folder); the first ``num``."""
    if images.endswith('.json'):
        with open(images) as f:
            entries = json.load(f)['images']
        prefix = img_prefix or os.path.dirname(images)
        paths = [os.path.join(prefix, e['file_name']) for e in entries]
    else:
        paths = list_images(images)
    paths = paths[:num]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f'images not found: {missing[:3]} (set '
                         '--img-prefix to the folder of the JSON\'s images)')
    return paths


def build_model_pair(
        apt_cfg,
        base_cfg,
        registry,
        checkpoint: Optional[str] = None,
        seed: int = 0,
        trust: Optional[bool] = None) -> Tuple[nn.Module, nn.Module]:
    """``(apt, baseline)`` in eval mode, holding the same weights.

    Without a checkpoint the baseline keeps its random initialisation and
    APT gets the same weights; its own ``apt_embed`` layers stay random,
    ZeroLinear included (a fine-tuned one is not zero, and merged tokens
    cost what they cost after fine-tuning). With one, APT loads it and the
    baseline gets APT's weights. The configs' ``init_cfg`` of the backbone
    (pretrained files) is dropped.
    """
    from mmengine.logging import MMLogger
    from mmengine.runner import load_checkpoint

    from mmapt.engine.checkpoint import safe_checkpoint_loading
    torch.manual_seed(seed)
    for cfg in (apt_cfg, base_cfg):
        cfg.model.backbone.pop('init_cfg', None)
    baseline = registry.build(base_cfg.model)
    apt = registry.build(apt_cfg.model)
    if checkpoint:
        # May be a Runner-written checkpoint; loaded without running code
        # (``trust``: see safe_checkpoint_loading).
        with safe_checkpoint_loading(trust):
            load_checkpoint(apt, checkpoint, map_location='cpu')
        source, target = apt, baseline
    else:
        # init_weights logs every parameter at INFO: keep tool output short.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            baseline.init_weights()
        finally:
            logger.setLevel(level)
        source, target = baseline, apt
    result = target.load_state_dict(source.state_dict(), strict=False)
    extra = [
        k for k in result.missing_keys + result.unexpected_keys
        if '.apt_embed.' not in k
    ]
    if extra:
        raise SystemExit('the two configs do not describe the same model '
                         f'apart from APT: {extra[:5]}')
    if not checkpoint:
        with torch.no_grad():
            for name, param in apt.named_parameters():
                if 'apt_embed.zero_linear.weight' in name:
                    param.normal_(std=0.02)
    return apt.eval(), baseline.eval()


def prepare(pipeline, path: str) -> dict:
    """One image through a built test pipeline, collated as a batch of 1."""
    from mmengine.dataset import pseudo_collate
    return pseudo_collate([pipeline(dict(img_path=path, img_id=0))])


def model_stages(model) -> list:
    """:class:`~mmapt.benchmark.timing.StageTimer` stages of a detector or
    segmentor: the backbone (what its marked stages leave: input checks,
    glue) and the neck. The backbone's own stages (plain: embedding,
    blocks, unpack; APT: tokenizer, embedding, context, blocks, unpack)
    come from its stage marks."""
    from mmapt.benchmark.timing import module_stage
    stages = [module_stage('backbone_rest', model.backbone)]
    if getattr(model, 'neck', None) is not None:
        stages.append(module_stage('neck', model.neck))
    return stages
