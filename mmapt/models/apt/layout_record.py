"""The APT patch sizes, recorded in every state dict and compared at load.

The APT layers (``apt_embed.*``) have the same shapes for any number of
scales (one 2 x 2 convolution is shared by all of them), so nothing in a
checkpoint's weights tells how many scales it was trained with, and a model
configured with fewer scales would load it without a word. An APT backbone
therefore writes its patch sizes as ``apt_embed.patch_sizes`` (an int64
tensor, e.g. ``[16, 32, 64, 128]``) into its state dict and compares them
when it loads one: a difference is a :class:`CheckpointLayoutWarning` naming
both layouts and the setting that matches the checkpoint. The weights still
load (the layers are shared, and tokenizing with other scales is a valid
experiment), but never silently.

The entry is not a parameter or buffer: checkpoints without it (written
before it existed, or plain backbone checkpoints from the converters) load
strictly, with one warning when they hold APT layers whose layout is unknown.
"""
import warnings
from typing import Sequence, Tuple

import torch
from torch import nn

RECORD_KEY = 'apt_embed.patch_sizes'


class CheckpointLayoutWarning(UserWarning):
    """A checkpoint's APT patch sizes differ from the model's (or are not
    recorded)."""


def attach_layout_record(backbone: nn.Module) -> None:
    """Make ``backbone`` (an APT backbone: ``tokenizer.patch_sizes``) write
    ``apt_embed.patch_sizes`` into its state dicts and check it when it
    loads one (torch's public state-dict hooks, which mmengine's
    ``get_state_dict`` / ``load_state_dict`` call too)."""
    backbone.register_state_dict_post_hook(_save_layout)
    backbone.register_load_state_dict_pre_hook(_check_layout_at_load)


def _model_patch_sizes(backbone: nn.Module) -> Tuple[int, ...]:
    return tuple(backbone.tokenizer.patch_sizes)


def _save_layout(backbone, state_dict, prefix, local_metadata) -> None:
    state_dict[prefix + RECORD_KEY] = torch.tensor(
        _model_patch_sizes(backbone), dtype=torch.int64, device='cpu')


def _check_layout_at_load(backbone, state_dict, prefix, *args) -> None:
    # Taken out before the children load, so it is never "unexpected".
    recorded = state_dict.pop(prefix + RECORD_KEY, None)
    if recorded is not None:
        if not recorded.is_meta:  # shape-only loads carry no values
            check_layout(
                tuple(int(s) for s in recorded.tolist()),
                _model_patch_sizes(backbone))
    elif any(k.startswith(prefix + 'apt_embed.') for k in state_dict):
        warnings.warn(
            'checkpoint has APT layers but no record of the patch sizes '
            'they were trained with (written before mmapt recorded them); '
            f'assuming the model\'s {_model_patch_sizes(backbone)}',
            CheckpointLayoutWarning)


def check_layout(checkpoint: Sequence[int], model: Sequence[int]) -> bool:
    """Warn (:class:`CheckpointLayoutWarning`) when a checkpoint's patch
    sizes differ from the model's; True when they match."""
    checkpoint, model = tuple(checkpoint), tuple(model)
    if checkpoint == model:
        return True
    warnings.warn(
        f'checkpoint was trained with APT patch sizes {checkpoint} '
        f'({len(checkpoint)} scales) but this model has {model} '
        f'({len(model)} scales): its weights load, but it tokenizes '
        'differently from how it was trained; to match the checkpoint set '
        f'model.backbone.patch_sizes={checkpoint} and '
        f'{len(checkpoint) - 1} thresholds', CheckpointLayoutWarning)
    return False
