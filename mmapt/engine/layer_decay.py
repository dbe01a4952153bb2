# Copyright (c) mmapt contributors. All rights reserved.
"""Layer-wise learning-rate decay for ViT backbones in mmdet and mmseg."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor

from mmapt.models.apt import is_apt_backbone
from mmapt.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with layer-wise learning-rate decay.

    The depth of every parameter comes from the backbone itself:
    ``model.backbone.get_layer_depth(name, prefix='backbone.')`` returns
    ``(layer_id, num_layers)`` (embeddings 0, block ``i`` gives ``i + 1``,
    the rest ``num_layers - 1``). A parameter of depth ``d`` gets the learning
    rate ``base_lr * layer_decay_rate ** (num_layers - 1 - d)``; parameters
    outside the backbone (neck, heads) get depth ``num_layers - 1``, i.e. the
    full learning rate. No class names are inspected, so any backbone with
    ``get_layer_depth`` works, in mmdet and mmseg alike.

    APT-only parameters are new layers, not pretrained ones: a backbone lists
    their name prefixes (relative to the backbone) in the class attribute
    ``apt_param_prefixes`` (``('apt_embed.',)`` for APT backbones), and they
    get ``base_lr * apt_lr_mult`` with no layer decay. Layer decay would put
    them at depth 0 (they belong to the embedding) and scale a fine-tune's
    rate by ``0.7 ** 13`` (base) or ``0.8 ** 25`` (large), so that the
    zero-initialised layers would hardly move; the official APT code also
    gives them the full rate.

    Weight decay is ``base_wd`` except for 1-D parameters (norm weights,
    biases, layer scales), parameters whose name ends in ``.bias``, and
    parameters whose last name component is listed in ``no_decay_names``
    (position embeddings, tokens), which get 0.

    ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (float, required): decay per layer, e.g. 0.7.
    - ``no_decay_names`` (Sequence[str], optional): parameter name
      components without weight decay. Defaults to
      ``('pos_embed', 'cls_token', 'mask_token', 'absolute_pos_embed',
      'register_tokens')``.
    - ``apt_lr_mult`` (float, optional): learning-rate multiplier of the
      APT-only parameters (``backbone.apt_param_prefixes``), replacing their
      layer scale. Defaults to 1.0 (the full base learning rate).
    - ``custom_keys`` (dict, optional): ``{substring: dict(lr_mult=...,
      decay_mult=...)}`` applied on top of the layer scale, the longest
      matching key first (same matching as mmengine's default constructor).

    Every parameter group carries ``lr_scale`` and ``group_name`` (e.g.
    ``layer_3_decay``, ``apt_decay``) for inspection; the groups are logged
    (name, learning rate, weight decay, number of parameters) when the
    optimizer is built.

    Example:
        >>> optim_wrapper = dict(
        ...     type='OptimWrapper',
        ...     constructor='LayerDecayOptimWrapperConstructor',
        ...     optimizer=dict(type='AdamW', lr=5e-5, weight_decay=0.1),
        ...     paramwise_cfg=dict(layer_decay_rate=0.7, apt_lr_mult=1.0))

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config.
        paramwise_cfg (dict, optional): See above.
    """

    DEFAULT_NO_DECAY_NAMES = ('pos_embed', 'cls_token', 'mask_token',
                              'absolute_pos_embed', 'register_tokens')

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        options = dict(paramwise_cfg)
        if 'layer_decay_rate' not in options:
            raise KeyError(
                'LayerDecayOptimWrapperConstructor needs '
                'paramwise_cfg=dict(layer_decay_rate=...), e.g. 0.7 for '
                'EVA-02-B detection; got paramwise_cfg='
                f'{paramwise_cfg}')
        self.layer_decay_rate = float(options.pop('layer_decay_rate'))
        if not 0 < self.layer_decay_rate <= 1:
            raise ValueError('layer_decay_rate must be in (0, 1], got '
                             f'{self.layer_decay_rate}')
        self.no_decay_names = tuple(
            options.pop('no_decay_names', self.DEFAULT_NO_DECAY_NAMES))
        self.apt_lr_mult = float(options.pop('apt_lr_mult', 1.0))
        if self.apt_lr_mult < 0:
            raise ValueError('apt_lr_mult must be >= 0, got '
                             f'{self.apt_lr_mult}')
        unknown = set(options) - {'custom_keys'}
        if unknown:
            raise KeyError(
                'LayerDecayOptimWrapperConstructor: unsupported paramwise_cfg '
                f'keys {sorted(unknown)}; supported: layer_decay_rate, '
                'apt_lr_mult, no_decay_names, custom_keys')
        # The full dict goes to the parent: a non-empty paramwise_cfg is what
        # makes it call add_params.
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_wd is None:
            self.base_wd = 0.0

    @staticmethod
    def _find_backbone(module: nn.Module) -> nn.Module:
        backbone = getattr(module, 'backbone', None)
        if backbone is None or not callable(
                getattr(backbone, 'get_layer_depth', None)):
            raise TypeError(
                'LayerDecayOptimWrapperConstructor needs a model with a '
                '`backbone` that implements get_layer_depth(param_name, '
                f'prefix) -> (layer_id, num_layers); {type(module).__name__}'
                f'.backbone is {type(backbone).__name__}. Use the default '
                'constructor (remove `constructor=`) for other models.')
        return backbone

    def _custom_mults(self, name: str) -> Tuple[float, float, Optional[str]]:
        custom_keys: Dict[str,
                          dict] = self.paramwise_cfg.get('custom_keys', {})
        for key in sorted(sorted(custom_keys), key=len, reverse=True):
            if key in name:
                cfg = custom_keys[key]
                return (float(cfg.get('lr_mult',
                                      1.0)), float(cfg.get('decay_mult',
                                                           1.0)), key)
        return 1.0, 1.0, None

    def _no_decay(self, name: str, param: nn.Parameter) -> bool:
        return (param.ndim <= 1 or name.endswith('.bias')
                or name.split('.')[-1] in self.no_decay_names)

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   **kwargs) -> None:
        """Append one parameter group per (layer, decay, custom key) to
        ``params``.

        Args:
            params (list[dict]): Parameter groups to extend in place.
            module (nn.Module): The model (already unwrapped from DDP by
                :meth:`DefaultOptimWrapperConstructor.__call__`).
            prefix (str): Unused; kept for signature compatibility.
        """
        backbone = self._find_backbone(module)
        bb_prefix = 'backbone.'
        apt_prefixes = tuple(
            bb_prefix + p
            for p in backbone.apt_param_prefixes) if is_apt_backbone(
                backbone) else ()
        groups: Dict[str, dict] = {}
        num_layers = None
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if apt_prefixes and name.startswith(apt_prefixes):
                layer_id = 'apt'  # new layers: apt_lr_mult, no layer decay
            elif name.startswith(bb_prefix):
                layer_id, num_layers_i = backbone.get_layer_depth(
                    name, prefix=bb_prefix)
                if num_layers is None:
                    num_layers = num_layers_i
                elif num_layers_i != num_layers:
                    raise ValueError(
                        'backbone.get_layer_depth returned inconsistent '
                        f'num_layers ({num_layers_i} vs {num_layers})')
                if not 0 <= layer_id < num_layers_i:
                    raise ValueError(
                        f'backbone.get_layer_depth({name!r}) returned '
                        f'layer_id {layer_id} outside [0, {num_layers_i})')
            else:
                layer_id = None  # outside the backbone: full learning rate
            no_decay = self._no_decay(name, param)
            lr_mult, decay_mult, key = self._custom_mults(name)
            if layer_id == 'apt':
                group_name = 'apt'
            else:
                group_name = 'layer_' + ('top' if layer_id is None else
                                         str(layer_id))
            group_name += '_no_decay' if no_decay else '_decay'
            if key is not None:
                group_name += f'_{key}'
            if group_name not in groups:
                groups[group_name] = dict(
                    params=[],
                    param_names=[],
                    group_name=group_name,
                    layer_id=layer_id,
                    weight_decay=0.0 if no_decay else self.base_wd *
                    decay_mult,
                    _lr_mult=lr_mult)
            groups[group_name]['params'].append(param)
            groups[group_name]['param_names'].append(name)
        if not any(g['layer_id'] is not None for g in groups.values()):
            raise ValueError('LayerDecayOptimWrapperConstructor: the backbone '
                             'has no trainable parameters named "backbone.*"')
        for group in groups.values():
            layer_id = group['layer_id']
            if layer_id is None:
                scale = 1.0  # depth num_layers - 1
            elif layer_id == 'apt':
                scale = self.apt_lr_mult
            else:
                scale = self.layer_decay_rate**(num_layers - 1 - layer_id)
            group['lr_scale'] = scale
            group['lr'] = self.base_lr * scale * group.pop('_lr_mult')
        # Groups outside the backbone first (full lr): the runner logs the
        # lr of the first group. Then by decreasing scale.
        ordered = sorted(
            groups.values(),
            key=lambda g: (g['layer_id'] is not None, -g['lr_scale']))
        for group in ordered:
            del group['layer_id']
        params.extend(ordered)
        self._log_groups(ordered, num_layers or 0)

    def _log_groups(self, groups: Sequence[dict], num_layers: int) -> None:
        logger = MMLogger.get_current_instance()
        logger.info(
            f'LayerDecayOptimWrapperConstructor: {len(groups)} parameter '
            f'groups, num_layers={num_layers}, '
            f'layer_decay_rate={self.layer_decay_rate}, '
            f'apt_lr_mult={self.apt_lr_mult}')
        for group in groups:
            logger.info(f'  {group["group_name"]}: lr={group["lr"]:.3e} '
                        f'(x{group["lr_scale"]:.4g}) '
                        f'weight_decay={group["weight_decay"]} '
                        f'{len(group["params"])} params')
            logger.debug(f'  {group["group_name"]} params: '
                         f'{group["param_names"]}')
