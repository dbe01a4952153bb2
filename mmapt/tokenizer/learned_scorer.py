"""The ``learned`` patch scorer: a small network trained without labels.

:class:`LearnedScorer` wraps a :class:`~mmapt.tokenizer.scorer_net.ScorerNet`
whose maps predict how far merging a patch moves the backbone's output
features (relative feature drift), so thresholds and budgets keep small
patches where merging would change the features. It is trained by
:class:`~mmapt.models.distillers.ScorerDistiller` (``tools/train.py
configs/toy/toy_learned_scorer_coco.py``; docs/scorers_eval.md).

Weights: the APT backbones register the network as ``apt_scorer`` (frozen),
so a detector's or segmentor's checkpoint carries it and ``init_cfg`` /
``load_from`` load it; or ``scorer=dict(type='learned', checkpoint=...)``
loads it when the scorer is built, from a scorer-distiller checkpoint or any
checkpoint holding exactly one copy of the network. A learned scorer whose
weights were never loaded refuses to score: random weights would give a
random layout without any sign of it.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from torch import Tensor

from mmapt.registry import PATCH_SCORERS
from .scorer_net import ANCHOR_KEY, ScorerNet
from .scorers import PatchScorer


def find_scorer_weights(state: Dict[str, Any],
                        net: ScorerNet,
                        source: str = 'the checkpoint') -> Dict[str, Tensor]:
    """The network's tensors inside a checkpoint's state dict, whatever the
    prefix they were saved under (``scorer.`` of the distiller,
    ``backbone.apt_scorer.`` of a detector, none for a bare file).

    Raises:
        ValueError: No copy, or several, of the network in ``state``, or
            one built with another ``prior`` (named in the message).
    """
    if isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    names = list(net.state_dict())
    anchor = ANCHOR_KEY
    prefixes = sorted({
        key[:-len(anchor)]
        for key in state if key.endswith(anchor) and (
            len(key) == len(anchor) or key[-len(anchor) - 1] == '.')
    })
    if len(prefixes) == 1:
        mismatch = net.prior_mismatch(state, prefixes[0])
        if mismatch:
            raise ValueError(f'{source}: {mismatch}')
    found = [p for p in prefixes if all(p + n in state for n in names)]
    if len(found) != 1:
        what = 'no' if not found else f'{len(found)} ({found})'
        raise ValueError(
            f'{source} holds {what} learned-scorer networks (keys such as '
            f'{anchor!r} under one prefix): give the checkpoint written by '
            f'tools/train.py with a scorer-distiller config, or a detector / '
            f'segmentor checkpoint trained with scorer=dict(type=\'learned\')')
    prefix = found[0]
    return {n: state[prefix + n] for n in names}


@PATCH_SCORERS.register_module('learned')
class LearnedScorer(PatchScorer):
    """Scores from a trained :class:`ScorerNet`: the predicted relative
    feature drift of merging each patch (``exp`` of the network's
    log-drift), an intensive quantity comparable across patch sizes.

    Args:
        checkpoint (str, optional): A checkpoint holding the network (see
            :func:`find_scorer_weights`), loaded without running code. None:
            the weights must come with the model's checkpoint (the
            backbone's ``apt_scorer.*``) before the first forward.
        patch_sizes (Sequence[int]): The patch sizes above the base that it
            scores (the backbone's, e.g. (32, 64, 128)). Defaults to
            (32, 64, 128).
        channels (int): Width of the network. Defaults to 32.
        prior (str, optional): ``'contrast'`` (default): the network also
            reads the contrast and gradient of each patch and learns a
            correction of contrast (an untrained one ranks exactly like
            ``contrast``); None: the gray image only (scorers trained
            before the option). Must match the checkpoint's; a mismatch
            is an error naming the value to set.
    """
    _registered_name = 'learned'
    unit = 'relative feature drift'

    def __init__(self,
                 checkpoint: Optional[str] = None,
                 patch_sizes: Sequence[int] = (32, 64, 128),
                 channels: int = 32,
                 prior: Optional[str] = 'contrast') -> None:
        self.network = ScorerNet(patch_sizes, channels=channels, prior=prior)
        self.network.requires_grad_(False).eval()
        self.checkpoint = checkpoint
        self.has_weights = False
        self.network.register_load_state_dict_pre_hook(self._note_load)
        if checkpoint is not None:
            self.load_file(checkpoint)

    def load_file(self, path: str) -> None:
        """Load the network's weights from a checkpoint file."""
        from mmapt.checkpoints.checkpoint_file import load_checkpoint_file
        state = load_checkpoint_file(path)
        self.network.load_state_dict(
            find_scorer_weights(state, self.network, path))

    def _note_load(self, module, state_dict: dict, prefix: str, *args,
                   **kwargs) -> None:
        # Called on every load_state_dict that reaches the network (its own,
        # or the backbone's / detector's with a prefix): the weights are
        # real once one of them held all the network's tensors.
        names = self.network.state_dict().keys()
        if all(prefix + name in state_dict for name in names):
            self.has_weights = True
        elif prefix + ANCHOR_KEY in state_dict:
            # A scorer network, but not this one: say why, before torch's
            # size-mismatch error (or mmengine's warning) hides it.
            mismatch = self.network.prior_mismatch(state_dict, prefix)
            if mismatch:
                raise ValueError(f'the checkpoint\'s learned scorer '
                                 f'({prefix}*) does not fit: {mismatch}')

    def check_weights(self) -> None:
        """ValueError unless trained weights were loaded."""
        if not self.has_weights:
            raise ValueError(
                'the learned scorer has no trained weights: give '
                'scorer=dict(type=\'learned\', checkpoint=PATH) with a '
                'checkpoint of tools/train.py on a scorer-distiller config '
                '(configs/toy/toy_learned_scorer_coco.py), or load a model '
                'checkpoint that holds backbone.apt_scorer.* (init_cfg / '
                'load_from) before the first forward')

    def score(self, gray: Tensor, patch_sizes: Sequence[int]) -> List[Tensor]:
        self.check_weights()
        self.network.check_patch_sizes(patch_sizes)
        net = self.network
        weight = net.trunk[0].weight
        if weight.device != gray.device:
            # Standalone use (tools): the backbone moves it with .to() when
            # it is registered as apt_scorer.
            net.to(gray.device)
        return [m.float().exp() for m in net(gray.to(weight.dtype))]

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(checkpoint={self.checkpoint!r}, '
                f'patch_sizes={self.network.patch_sizes}, '
                f'prior={self.network.prior!r})')


def lacks_checkpoint(scorer: Union[str, Mapping, None]) -> bool:
    """Whether a scorer config is a ``learned`` scorer without a
    ``checkpoint`` (also as an ``importance`` base): the one
    :func:`with_checkpoint` fills in."""
    if scorer == 'learned':
        return True
    if not isinstance(scorer, Mapping):
        return False
    if scorer.get('type') == 'learned':
        return 'checkpoint' not in scorer
    return 'base' in scorer and lacks_checkpoint(scorer['base'])


def with_checkpoint(scorer: Union[str, Mapping, None],
                    checkpoint: str) -> Union[str, Mapping, None]:
    """A scorer config with ``checkpoint`` filled in where it is a
    ``learned`` scorer without one (also as an ``importance`` base); other
    configs are returned as they are."""
    if scorer == 'learned':
        return dict(type='learned', checkpoint=checkpoint)
    if not isinstance(scorer, Mapping):
        return scorer
    out = dict(scorer)
    if out.get('type') == 'learned':
        out.setdefault('checkpoint', checkpoint)
    elif 'base' in out:
        out['base'] = with_checkpoint(out['base'], checkpoint)
    return out


def learned_scorer_cfg(scorer: str, checkpoint: Optional[str],
                       patch_sizes: Sequence[int]) -> Union[str, dict]:
    """A tool's ``--scorer NAME [--scorer-checkpoint PATH]`` as a scorer
    config:
    ``learned`` needs the checkpoint (scoring ``patch_sizes``, the sizes
    above the base); the other scorers take none."""
    if scorer != 'learned':
        if checkpoint is not None:
            raise ValueError(f'--scorer-checkpoint holds learned-scorer '
                             f'weights: use it with --scorer learned, not '
                             f'{scorer!r}')
        return scorer
    if checkpoint is None:
        raise ValueError('--scorer learned needs --scorer-checkpoint PATH: '
                         'the weights written by tools/train.py on a scorer-'
                         'distiller config')
    return dict(
        type='learned', checkpoint=checkpoint, patch_sizes=tuple(patch_sizes))
