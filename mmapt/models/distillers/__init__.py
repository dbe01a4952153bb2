"""Label-free training of APT parts from a frozen backbone."""
from .scorer_distiller import ScorerDistiller

__all__ = ['ScorerDistiller']
