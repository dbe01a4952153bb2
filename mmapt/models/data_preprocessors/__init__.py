"""Per-image data for the APT backbones (importance maps) next to the
images: :class:`APTDataPreprocessor` and the 4-channel input convention."""
from .apt_inputs import APTDataPreprocessor, pack_apt_inputs, split_apt_inputs

__all__ = ['APTDataPreprocessor', 'pack_apt_inputs', 'split_apt_inputs']
