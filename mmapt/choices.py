# Copyright (c) mmapt contributors. All rights reserved.
"""One wording for "this option takes one of these values" (bottom floor:
no mmapt imports, no torch)."""
from typing import Any, Sequence


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise a ValueError naming ``name``, the allowed values and what was
    given, unless ``value`` is one of ``choices``."""
    if value in choices:
        return
    names = [repr(c) for c in choices]
    allowed = names[0] if len(names) == 1 else (', '.join(names[:-1]) +
                                                ' or ' + names[-1])
    raise ValueError(f'{name} must be {allowed}, got {value!r}')
