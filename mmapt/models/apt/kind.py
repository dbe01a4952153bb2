"""The one public answer to "is this an APT backbone?".

A backbone is APT when its registered class is built with
:class:`APTBackboneMixin` (``class APTMyViT(APTBackboneMixin, MyViT)``);
its APT arguments are then exactly :meth:`APTAdapter.arg_names`. Nothing
else decides it: not a ``thresholds`` argument, not a name starting with
``APT``. Tools ask this from a config, before anything is built.
"""
import inspect
from typing import Any, Dict, Mapping, Optional, Union

from .adapter import APTAdapter
from .mixin import APTBackboneMixin


def backbone_class(backbone_type: Union[str, type]) -> type:
    """The registered class of a backbone ``type`` (a name or a class).

    Raises:
        KeyError: the name is not registered, naming the APT ones.
    """
    if isinstance(backbone_type, type):
        return backbone_type
    import mmapt.models  # noqa: F401  (registers the backbones)
    from mmapt.registry import MODELS
    cls = MODELS.get(backbone_type)
    if cls is None:
        raise KeyError(f'backbone type {backbone_type!r} is not registered; '
                       'mmapt registers APTEVA02, APTViT, EVA02 and ViT')
    return cls


def is_apt_backbone(backbone: Union[str, type, object]) -> bool:
    """Whether a backbone (registered name, class or built instance) is an
    APT backbone: its class is an :class:`APTBackboneMixin` subclass."""
    if not isinstance(backbone, (str, type)):
        backbone = type(backbone)
    return issubclass(backbone_class(backbone), APTBackboneMixin)


def backbone_cfg_of(cfg: Mapping) -> Optional[Mapping]:
    """``model.backbone`` of a config (through a TTA wrapper's ``module``),
    or ``cfg`` itself when it is a backbone config; None without one."""
    if 'model' in cfg:
        model = cfg['model'] or {}
        if 'backbone' not in model and 'module' in model:
            model = model['module'] or {}
        return model.get('backbone')
    return cfg if 'type' in cfg else None


def init_default(cls: type, name: str, default: Any = None) -> Any:
    """The default of ``name`` in the first ``__init__`` of ``cls``'s MRO
    that names it (an APT class's own ``__init__`` takes ``**kwargs``, so
    the plain class's constructor states the default)."""
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if name in params:
            value = params[name].default
            return default if value is inspect.Parameter.empty else value
    return default


def apt_tokenizer_args(backbone: Mapping) -> Optional[Dict[str, Any]]:
    """The :class:`~mmapt.tokenizer.PatchTokenizer` arguments an APT
    backbone config gives its tokenizer (its APT arguments, base patch size
    and window); None for a plain backbone (:func:`is_apt_backbone`).
    ``PatchTokenizer(**args)`` runs the backbone's own checks of every APT
    option, with no weights built.
    """
    cls = backbone_class(backbone['type'])
    if not is_apt_backbone(cls):
        return None
    args = {
        name: backbone[name]
        for name in APTAdapter.arg_names() if name in backbone
    }
    if 'thresholds' in args:
        args['thresholds'] = tuple(args['thresholds'])
    for name, fallback in (('patch_size', 16), ('window_size', 0)):
        args[name] = backbone.get(name, init_default(cls, name, fallback))
    return args


def is_apt_backbone_cfg(cfg: Mapping) -> bool:
    """Whether a config (or a backbone config dict) has an APT backbone;
    False for a backbone type mmapt does not register (another scope's)."""
    backbone: Optional[Mapping[str, Any]] = backbone_cfg_of(cfg)
    if not backbone or 'type' not in backbone:
        return False
    try:
        return is_apt_backbone(backbone['type'])
    except KeyError:
        return False
