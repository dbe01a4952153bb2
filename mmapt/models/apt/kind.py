"""The one public answer to "is this an APT backbone?".

A backbone is APT when its constructor takes the APT arguments
(:meth:`APTAdapter.arg_names`): the classes built with
:class:`APTBackboneMixin` hand exactly those to their adapter, and a
backbone written without the mixin names ``thresholds`` in its own
``__init__``. Tools ask this from a config, before anything is built.
"""
import inspect
from typing import Any, Dict, Mapping, Optional, Tuple, Type, Union

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


def apt_arg_names_of(cls: Type) -> Tuple[str, ...]:
    """The APT arguments the backbone class ``cls`` takes (empty for a
    plain backbone)."""
    if issubclass(cls, APTBackboneMixin):
        return APTAdapter.arg_names()
    params = inspect.signature(cls.__init__).parameters
    if 'thresholds' not in params:
        return ()
    return tuple(name for name in APTAdapter.arg_names() if name in params)


def is_apt_backbone(backbone_type: Union[str, type]) -> bool:
    """Whether a backbone (registered name or class) is an APT backbone."""
    return bool(apt_arg_names_of(backbone_class(backbone_type)))


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
    that names it (an APT class's own ``__init__`` takes ``**kwargs``)."""
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
    and window); None for a plain backbone. ``PatchTokenizer(**args)`` runs
    the backbone's own checks of every APT option, with no weights built.
    """
    cls = backbone_class(backbone['type'])
    names = apt_arg_names_of(cls)
    if not names:
        return None
    args = {name: backbone[name] for name in names if name in backbone}
    if 'thresholds' in args:
        args['thresholds'] = tuple(args['thresholds'])
    args['patch_size'] = backbone.get('patch_size',
                                      init_default(cls, 'patch_size', 16))
    args['window_size'] = backbone.get('window_size',
                                       init_default(cls, 'window_size'))
    return args


def is_apt_backbone_cfg(cfg: Mapping) -> bool:
    """Whether a config (or a backbone config dict) has an APT backbone."""
    backbone: Optional[Mapping[str, Any]] = backbone_cfg_of(cfg)
    if not backbone or 'type' not in backbone:
        return False
    return is_apt_backbone(backbone['type'])
