"""Data pipeline transforms of mmapt: per-image importance maps for the APT
``importance`` scorer (see :mod:`mmapt.models.data_preprocessors`)."""
from .importance import BoxImportanceMap, ImportanceMapError, LoadImportanceMap

__all__ = ['BoxImportanceMap', 'ImportanceMapError', 'LoadImportanceMap']
