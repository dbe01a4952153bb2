# Copyright (c) mmapt contributors. All rights reserved.
"""Whether a checkpoint's weights fit a model, before they are loaded.

mmengine loads ``init_cfg=dict(type='Pretrained')`` and ``load_from``
non-strictly: tensors of another shape or name are skipped with a warning,
so an EVA-02-L file given to a B model loads nothing and training goes on
from random weights. :func:`check_weight_fit` refuses such a load, naming
the architectures (``the checkpoint has 24 blocks of 1024 channels, the
model 12 of 768``), the tensors of other shapes and the share of the model's
tensors that would load. A load is refused when

* a ViT (``blocks.N.*``) in the model and in the checkpoint differs in its
  number of blocks or channels, or
* a tensor of the model has another shape in the checkpoint (a position
  table of another grid with the same channels is resampled, so it fits),
  or
* less than :data:`MIN_SHARE` of the model's tensors would load (a wrong
  ``prefix``, another model).

Tensors the checkpoint lacks (the APT layers ``apt_embed.*`` when a plain
checkpoint initialises an APT model) or has in excess are not refused.
"""
import copy
import re
from contextlib import contextmanager
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

#: The least share of a model's tensors a checkpoint must fill.
MIN_SHARE = 0.5
#: The ``init_cfg`` key of a ``Pretrained`` entry that allows a partial load.
ALLOW_PARTIAL = 'allow_partial'

_BLOCK = re.compile(r'^(.*?)blocks\.(\d+)\.')
# Position tables are resampled to the model's grid on load.
_RESAMPLED = ('pos_embed', )


class CheckpointFitError(ValueError):
    """A checkpoint whose weights do not fit the model; the message names
    what differs, the share that would load and the switch for a partial
    load."""


class WeightFit(NamedTuple):
    """How a state dict fills a model's tensors."""
    total: int
    loadable: int
    #: (name, shape in the checkpoint, shape in the model)
    mismatched: List[Tuple[str, tuple, tuple]]
    missing: List[str]

    @property
    def share(self) -> float:
        return self.loadable / self.total if self.total else 1.


def _fits(name: str, found: torch.Size, expected: torch.Size) -> bool:
    if found == expected:
        return True
    return name.rsplit('.', 1)[-1] in _RESAMPLED and \
        len(found) == len(expected) and found[-1] == expected[-1]


def weight_fit(model_shapes: Dict[str, torch.Size],
               state: Dict[str, torch.Tensor]) -> WeightFit:
    """Which of the model's tensors ``state`` would fill.

    Args:
        model_shapes (dict[str, torch.Size]): The model's state dict shapes.
        state (dict[str, Tensor]): The checkpoint's state dict, keys as the
            model names them.
    """
    loadable, mismatched, missing = 0, [], []
    for name, expected in model_shapes.items():
        value = state.get(name)
        if not isinstance(value, torch.Tensor):
            missing.append(name)
        elif _fits(name, value.shape, expected):
            loadable += 1
        else:
            mismatched.append((name, tuple(value.shape), tuple(expected)))
    return WeightFit(len(model_shapes), loadable, mismatched, missing)


def vit_layouts(
        shapes: Dict[str, Sequence[int]]) -> Dict[str, Tuple[int, int]]:
    """``{prefix: (blocks, channels)}`` of every ViT in a state dict
    (``prefix`` is ``''`` for a backbone, ``'backbone.'`` in a detector)."""
    blocks: Dict[str, set] = {}
    for name in shapes:
        match = _BLOCK.match(name)
        if match:
            blocks.setdefault(match.group(1), set()).add(int(match.group(2)))
    layouts = {}
    for prefix, indices in blocks.items():
        width = _width(shapes, prefix)
        if width is not None:
            layouts[prefix] = (max(indices) + 1, width)
    return layouts


def _width(shapes: Dict[str, Sequence[int]], prefix: str) -> Optional[int]:
    for name, dim in (('patch_embed.proj.weight', 0), ('pos_embed', -1),
                      ('blocks.0.norm1.weight', 0)):
        shape = shapes.get(prefix + name)
        if shape is not None and len(shape) > 0:
            return int(tuple(shape)[dim])
    return None


def _shapes(state: Dict[str, torch.Tensor]) -> Dict[str, tuple]:
    return {
        k: tuple(v.shape)
        for k, v in state.items() if isinstance(v, torch.Tensor)
    }


def fit_problems(
        model_shapes: Dict[str, torch.Size],
        state: Dict[str, torch.Tensor]) -> Tuple[List[str], WeightFit]:
    """What keeps ``state`` from fitting the model (empty when it fits),
    and the :class:`WeightFit`."""
    fit = weight_fit(model_shapes, state)
    problems = []
    theirs = vit_layouts(_shapes(state))
    for prefix, (blocks, width) in vit_layouts(model_shapes).items():
        found = theirs.get(prefix)
        if found is not None and found != (blocks, width):
            where = f' ({prefix.rstrip(".")})' if prefix else ''
            problems.append(
                f'the checkpoint has {found[0]} blocks of {found[1]} '
                f'channels{where}, the model {blocks} of {width}')
    if fit.mismatched:
        name, found_shape, expected = fit.mismatched[0]
        problems.append(
            f'{len(fit.mismatched)} tensors have other shapes (e.g. {name}: '
            f'checkpoint {found_shape}, model {expected})')
    if fit.share < MIN_SHARE and not problems:
        problems.append(f'under {MIN_SHARE:.0%} of the model\'s tensors '
                        'would load')
        if fit.loadable == 0 and state and model_shapes:
            problems.append(
                f'checkpoint keys look like {next(iter(state))!r}, the '
                f'model\'s like {next(iter(model_shapes))!r} (another model, '
                'or a prefix to add or strip)')
    return problems, fit


def check_weight_fit(model_shapes: Dict[str, torch.Size],
                     state: Dict[str, torch.Tensor], source: str,
                     switch: str) -> WeightFit:
    """Raise :class:`CheckpointFitError` when ``state`` does not fit.

    Args:
        model_shapes (dict[str, torch.Size]): The model's state dict shapes.
        state (dict[str, Tensor]): The checkpoint's state dict.
        source (str): What the checkpoint is, for the message (e.g.
            ``"load_from x.pth"``).
        switch (str): The setting that allows a partial load, for the
            message.

    Returns:
        WeightFit: How the checkpoint fills the model (when it fits).
    """
    problems, fit = fit_problems(model_shapes, state)
    if problems:
        raise CheckpointFitError(
            f'{source} does not fit the model: {"; ".join(problems)}. '
            f'{fit.loadable} of the model\'s {fit.total} tensors '
            f'({fit.share:.0%}) would load, the rest would train from random '
            'weights. Use a checkpoint of this architecture, or set '
            f'{switch} to load what fits anyway')
    return fit


def _pop_allow_partial(init_cfg) -> Tuple[object, List[dict], bool]:
    """``init_cfg`` without :data:`ALLOW_PARTIAL` (which mmengine's
    ``PretrainedInit`` does not take), its ``Pretrained`` entries and
    whether they all allow a partial load."""
    cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
    cleaned, pretrained, allow = [], [], True
    for cfg in cfgs:
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            cfg = copy.copy(cfg)
            allow = bool(cfg.pop(ALLOW_PARTIAL, False)) and allow
            pretrained.append(cfg)
        cleaned.append(cfg)
    return (cleaned
            if isinstance(init_cfg, list) else cleaned[0]), pretrained, allow


@contextmanager
def checked_pretrained_init(module: nn.Module) -> Iterator[None]:
    """Inside the block, a ``Pretrained`` ``init_cfg`` of ``module`` whose
    weights do not fit raises :class:`CheckpointFitError` before anything
    is copied (wrap ``super().init_weights()``); with
    ``init_cfg=dict(type='Pretrained', ..., allow_partial=True)`` mmengine
    loads what fits, as before."""
    init_cfg = getattr(module, 'init_cfg', None)
    cleaned, pretrained, allow = _pop_allow_partial(init_cfg)
    module.init_cfg = cleaned
    handle = None
    if pretrained and not allow:
        shapes = {k: v.shape for k, v in module.state_dict().items()}
        source = f'init_cfg checkpoint {pretrained[0].get("checkpoint")}'
        switch = (f"init_cfg=dict(type='Pretrained', ..., "
                  f'{ALLOW_PARTIAL}=True)')

        def check(state_dict, prefix, *args) -> None:
            own = {
                k[len(prefix):]: v
                for k, v in state_dict.items() if k.startswith(prefix)
            }
            check_weight_fit(shapes, own, source, switch)

        handle = module._register_load_state_dict_pre_hook(check)
        # First, before hooks that reshape incoming tensors (position
        # tables) and could fail on another architecture.
        module._load_state_dict_pre_hooks.move_to_end(handle.id, last=False)
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        module.init_cfg = init_cfg
