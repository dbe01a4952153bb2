"""mmapt models: backbones (EVA02, APTEVA02), their layers, and the necks."""
from importlib.util import find_spec

from .backbones import APTEVA02, EVA02
from .layers import VarlenPlan, varlen_attention

__all__ = ['EVA02', 'APTEVA02', 'VarlenPlan', 'varlen_attention']

# The necks are written in parallel by another engineer; register them when
# the package exists (a failing import inside it still raises).
if find_spec(__name__ + '.necks') is not None:
    from . import necks  # noqa: F401
