# Copyright (c) mmapt contributors. All rights reserved.
"""Autocast dtype names (torch only, shared by the engine and the tools)."""
import argparse
from typing import Dict, Optional, Union

import torch

AMP_DTYPES: Dict[str, torch.dtype] = {
    'fp16': torch.float16,
    'float16': torch.float16,
    'bf16': torch.bfloat16,
    'bfloat16': torch.bfloat16,
}


def resolve_amp_dtype(dtype: Optional[Union[str, torch.dtype]],
                      device_type: str) -> torch.dtype:
    """``'fp16'``/``'bf16'`` (or a torch dtype) -> torch dtype; None picks
    fp16 on CUDA and bf16 on CPU (what each device has fast kernels for)."""
    if dtype is None:
        return torch.float16 if device_type == 'cuda' else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        if dtype not in AMP_DTYPES.values():
            raise ValueError(f'autocast dtype must be float16 or bfloat16, '
                             f'got {dtype}')
        return dtype
    key = str(dtype).lower()
    if key not in AMP_DTYPES:
        raise ValueError(f'unknown autocast dtype {dtype!r}; use one of '
                         f'{sorted(AMP_DTYPES)}')
    return AMP_DTYPES[key]


#: The tools' ``--dtype`` choices: ``fp32`` runs without autocast.
PRECISION_CHOICES = ('bf16', 'fp16', 'fp32')


def add_device_argument(parser: argparse.ArgumentParser,
                        device: str = 'cpu') -> None:
    """The tools' ``--device``, with this default."""
    parser.add_argument(
        '--device',
        default=device,
        help=f'torch device, e.g. cpu, cuda, cuda:1 (default: {device})')


def add_device_dtype_arguments(parser: argparse.ArgumentParser,
                               device: str = 'cpu',
                               dtype: str = 'fp32') -> None:
    """The tools' ``--device`` and ``--dtype`` (autocast; one of
    :data:`PRECISION_CHOICES`) options, with these defaults."""
    add_device_argument(parser, device)
    parser.add_argument(
        '--dtype',
        choices=PRECISION_CHOICES,
        default=dtype,
        help='autocast dtype (fp32: no autocast)')


def precision_dtype(name: str) -> Optional[torch.dtype]:
    """A tool's ``--dtype`` as the autocast dtype: None for ``'fp32'`` (no
    autocast), else :func:`resolve_amp_dtype`'s (the one table)."""
    if str(name).lower() in ('fp32', 'float32'):
        return None
    return resolve_amp_dtype(name, 'cpu')
