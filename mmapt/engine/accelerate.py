"""``--accelerate`` for the tools: compiled or CUDA-graphed inference
backbones, set through the config (``model.backbone.accelerate``).

``--accelerate compile`` is the same as ``--cfg-options
model.backbone.accelerate=compile``; the backbone does the rest (see
:mod:`mmapt.models.backbones.accelerate`).
"""
from typing import Optional

from mmengine.config import Config

from mmapt.models.backbones.accelerate import ACCELERATE_MODES


def add_accelerate_arg(parser) -> None:
    """Add ``--accelerate {compile,cuda_graphs}`` to a tool's parser."""
    parser.add_argument(
        '--accelerate',
        choices=list(ACCELERATE_MODES),
        default=None,
        help='run the backbone compiled (torch.compile, inductor; CPU or '
        'GPU) or as CUDA graphs (CUDA only; eager with one log line '
        'elsewhere), one per input shape (APT: per token bucket); sets '
        'model.backbone.accelerate')


def apply_accelerate(cfg: Config, mode: Optional[str]) -> None:
    """Set ``model.backbone.accelerate = mode`` (a TTA wrapper's inner
    model too); nothing for None. ValueError naming the fix when the
    config has no mmapt ViT backbone to set it on."""
    if mode is None:
        return
    if mode not in ACCELERATE_MODES:
        raise ValueError(f'accelerate must be one of {ACCELERATE_MODES}, '
                         f'got {mode!r}')
    model = cfg.get('model') or {}
    if 'backbone' not in model and 'module' in model:  # a TTA wrapper
        model = model['module'] or {}
    backbone = model.get('backbone')
    if not backbone:
        raise ValueError('--accelerate: the config has no model.backbone '
                         'to set accelerate on')
    backbone_cls = _backbone_class(str(backbone.get('type', '')))
    from mmapt.models.backbones import BaseViT
    if backbone_cls is None or not issubclass(backbone_cls, BaseViT):
        raise ValueError(
            f'--accelerate: model.backbone type {backbone.get("type")!r} is '
            'not an mmapt ViT backbone (EVA02, ViT, APTEVA02, APTViT or '
            'another BaseViT); only those take accelerate')
    backbone['accelerate'] = mode


def _backbone_class(name: str) -> Optional[type]:
    from mmapt.registry import MODELS
    try:
        return MODELS.get(name)
    except KeyError:
        return None
