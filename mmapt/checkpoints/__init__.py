"""Checkpoint files: safe loading, atomic writing, and whether weights fit.

The bottom floor of the package: it imports torch (and mmengine's history
buffer for safe loading) and nothing from the rest of mmapt, so converters,
models, the engine and the tools can all use it.
"""
from .checkpoint_file import (CheckpointFileError, CheckpointNotFoundError,
                              UntrustedCheckpointError,
                              checkpoint_file_problem, load_checkpoint_file,
                              save_checkpoint_file)
from .checkpoint_fit import CheckpointFitError, check_weight_fit

__all__ = [
    'CheckpointFileError', 'CheckpointNotFoundError',
    'UntrustedCheckpointError', 'checkpoint_file_problem',
    'load_checkpoint_file', 'save_checkpoint_file', 'CheckpointFitError',
    'check_weight_fit'
]
