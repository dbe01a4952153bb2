"""ONNX Runtime inference of an export folder (``deploy.json`` + graphs).

The bucket of a batch is chosen as the APT backbone's static mode chooses
it (:func:`~mmapt.tokenizer.layout.choose_pack_size`: the smallest bucket
that holds the batch's packed tokens, else the largest). The packed token
count comes from the exported tokenizer graph (``*_count.onnx``), run in
the same ONNX Runtime session options: it is the tokenizer's own code, so
the count is exact, it costs the tokenizer's share of a forward (the
entropy maps and the patch choice, no blocks), and the runtime needs no
model weights on the torch side. A budget-mode export runs no count: every
batch has the same one, which the manifest records
(``fixed_packed_tokens``).

A batch no bucket holds: static mode caps it to the largest bucket by score
(the lowest-scoring splits are merged until it fits) and so does the
largest bucket's graph, which contains that rule; the runtime then reports
``capped=True`` and warns (``on_overflow='cap'``, the default), or raises
(``on_overflow='error'``).
"""
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .manifest import HASH_KEY, check_config, file_sha256, read_manifest

#: Providers tried in this order when available; only the CPU one is tested
#: in this project (no GPU build of onnxruntime here).
PREFERRED_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider',
                       'CPUExecutionProvider')
OVERFLOW_RULES = ('cap', 'error')
#: Session settings for graphs whose activations run to gigabytes (global
#: attention over thousands of tokens): without onnxruntime's CPU arena
#: every tensor goes back to the system when freed, instead of the arena
#: keeping (and rounding up) its largest extension between runs.
LOW_MEMORY_OPTIONS = dict(enable_cpu_mem_arena=False)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            'onnxruntime is not installed: the ONNX runtime needs it. Install '
            'with: pip install .[deploy] (or pip install -r '
            'requirements/deploy.txt)') from err
    return onnxruntime


def available_providers() -> List[str]:
    """Execution providers of the installed onnxruntime, in
    :data:`PREFERRED_PROVIDERS` order (others after)."""
    found = import_onnxruntime().get_available_providers()
    ordered = [p for p in PREFERRED_PROVIDERS if p in found]
    return ordered + [p for p in found if p not in ordered]


def check_providers(providers: Sequence[str]) -> List[str]:
    """ValueError naming the installed providers when one is missing."""
    found = import_onnxruntime().get_available_providers()
    missing = [p for p in providers if p not in found]
    if missing:
        raise ValueError(
            f'execution provider(s) {missing} not available in this '
            f'onnxruntime (available: {found}); CUDA / TensorRT need the '
            'onnxruntime-gpu package and a matching CUDA, or use '
            'CPUExecutionProvider')
    return list(providers)


def session_options_of(settings: Dict[str, Any]):
    """``onnxruntime.SessionOptions`` with ``settings`` (attribute: value;
    None values are left at onnxruntime's default); ValueError naming the
    valid attributes for an unknown one."""
    options = import_onnxruntime().SessionOptions()
    for name, value in settings.items():
        if name.startswith('_') or not hasattr(options, name) or callable(
                getattr(options, name)):
            valid = sorted(
                n for n in dir(options)
                if not n.startswith('_') and not callable(getattr(options, n)))
            raise ValueError(f'{name!r} is not an onnxruntime SessionOptions '
                             f'attribute; valid: {", ".join(valid)}')
        if value is not None:
            setattr(options, name, value)
    return options


@dataclass
class DeployResult:
    """One run: the graph's outputs by name, the bucket it ran in (None for
    a plain model), the packed tokens the batch needed and whether it was
    capped to the bucket."""
    outputs: Dict[str, np.ndarray]
    pack_size: Optional[int]
    packed_tokens: Optional[int]
    capped: bool


class ONNXRuntimeModel:
    """An export folder run in ONNX Runtime.

    Args:
        directory (str): The ``--out`` folder of
            ``tools/deployment/export_onnx.py`` (or its ``deploy.json``).
        providers (Sequence[str], optional): Execution providers; None:
            ``['CPUExecutionProvider']``. CUDA / TensorRT are passed through
            to onnxruntime (untested here).
        config (str | Config, optional): When given, the files must have
            been exported from it (same model settings hash).
        intra_op_num_threads (int, optional): Threads per ONNX Runtime
            operator; None: onnxruntime's default.
        on_overflow (str): ``'cap'`` (static mode's rule: the largest bucket,
            capped by score, with a warning) or ``'error'``.
        check_files (bool): Compare every file's SHA-256 with the manifest.
            Defaults to True.
        session_options (dict, optional): Further ``SessionOptions``
            attributes for every session, e.g. ``enable_cpu_mem_arena=False``
            (:data:`LOW_MEMORY_OPTIONS`: large graphs then need a fraction
            of the memory, docs/deploy.md).
    """

    def __init__(self,
                 directory: str,
                 providers: Optional[Sequence[str]] = None,
                 config: Optional[Any] = None,
                 intra_op_num_threads: Optional[int] = None,
                 on_overflow: str = 'cap',
                 check_files: bool = True,
                 session_options: Optional[Dict[str, Any]] = None) -> None:
        ort = import_onnxruntime()
        if on_overflow not in OVERFLOW_RULES:
            raise ValueError(f'on_overflow must be one of {OVERFLOW_RULES}, '
                             f'got {on_overflow!r}')
        self.on_overflow = on_overflow
        self.manifest = read_manifest(directory)
        root = directory if osp.isdir(directory) else osp.dirname(directory)
        if isinstance(config, str):
            from mmengine.config import Config
            config = Config.fromfile(config)
        check_config(self.manifest, config, f'{root}')
        self.providers = check_providers(providers or ['CPUExecutionProvider'])
        options = session_options_of(
            dict(
                session_options or {},
                intra_op_num_threads=intra_op_num_threads))
        self.options = options

        def session(entry: Dict[str, Any]):
            path = osp.join(root, entry['file'])
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'{path} (listed in the manifest) is missing: copy the '
                    'whole export folder, or export again')
            if check_files and file_sha256(path) != entry['sha256']:
                raise ValueError(
                    f'{path} is not the file the manifest lists (SHA-256 '
                    'differs): it was replaced, maybe by an export of '
                    'another config; export again into an empty folder')
            sess = ort.InferenceSession(
                path, sess_options=options, providers=self.providers)
            stamp = sess.get_modelmeta().custom_metadata_map.get(HASH_KEY)
            if stamp != self.manifest['config_hash']:
                raise ValueError(
                    f'{path} was exported from another config (hash '
                    f'{str(stamp)[:12]}, the manifest says '
                    f'{self.manifest["config_hash"][:12]} for '
                    f'{self.manifest["config"]}); export again into an '
                    'empty folder')
            return sess

        self.sessions = {
            entry['pack_size']: session(entry)
            for entry in self.manifest['buckets']
        }
        count = self.manifest.get('count_graph')
        # Budget mode needs no count: the manifest has it.
        needs_count = count and \
            self.manifest.get('fixed_packed_tokens') is None
        self.count_session = session(count) if needs_count else None

    # ------------------------------------------------------------- facts
    @property
    def input_shape(self) -> List[int]:
        return list(self.manifest['input']['shape'])

    @property
    def buckets(self) -> List[int]:
        """The exported pack sizes, ascending (empty for a plain model)."""
        return sorted(s for s in self.sessions if s is not None)

    @property
    def output_names(self) -> List[str]:
        return [o['name'] for o in self.manifest['outputs']]

    # --------------------------------------------------------------- run
    def check_input(self, images: np.ndarray) -> np.ndarray:
        """float32 (B, 3, H, W) of the exported shape, or a ValueError."""
        images = np.asarray(images)
        want = self.input_shape
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f'expected normalised images (B, 3, H, W), got '
                             f'shape {images.shape}')
        height, width = images.shape[2:]
        if height > want[2] or width > want[3]:
            raise ValueError(
                f'image {height}x{width} is larger than the exported canvas '
                f'{want[2]}x{want[3]}: resize it to fit (long side '
                f'{max(want[2:])}, tools/deployment/onnx_infer.py does) or '
                'export with a larger --shape')
        if (height, width) != tuple(want[2:]):
            raise ValueError(
                f'image {height}x{width} is smaller than the exported canvas '
                f'{want[2]}x{want[3]}: pad it bottom/right to the canvas '
                '(the data pipeline\'s padding) or export with --shape '
                f'{height} {width}')
        if images.shape[0] != want[0]:
            raise ValueError(
                f'the graphs take batches of {want[0]}, got {images.shape[0]}'
                ': run the images in batches of that size, or export with '
                f'--batch-size {images.shape[0]}')
        return images.astype(np.float32, copy=False)

    def packed_tokens(self, images: np.ndarray) -> Optional[int]:
        """Packed tokens (prefix included) the batch needs in exact packing;
        None for a plain model. A budget-mode export records the count
        every batch has (``fixed_packed_tokens``): no graph runs then."""
        fixed = self.manifest.get('fixed_packed_tokens')
        if fixed is not None:
            return int(fixed)
        if self.count_session is None:
            return None
        feed = {self.count_session.get_inputs()[0].name: images}
        return int(self.count_session.run(None, feed)[0][0])

    def select_bucket(self, images: np.ndarray):
        """(pack size, packed tokens, capped) of a checked batch."""
        from mmapt.tokenizer.layout import choose_pack_size
        needed = self.packed_tokens(images)
        if needed is None:
            return None, None, False
        size = choose_pack_size(needed, self.buckets)
        capped = needed > size
        if capped:
            message = (
                f'this batch needs {needed} packed tokens but the largest '
                f'exported bucket holds {size}')
            if self.on_overflow == 'error':
                raise ValueError(
                    f'{message}: export a larger bucket (--bucket '
                    f'{needed} or more), or allow capping '
                    '(on_overflow=\'cap\', --on-overflow cap)')
            warnings.warn(f'{message}: capped to it by score, as static '
                          'mode does (the outputs differ from exact '
                          'packing\'s)')
        return size, needed, capped

    def __call__(self, images: np.ndarray) -> DeployResult:
        """Run a normalised batch (B, 3, H, W) in its bucket's graph."""
        images = self.check_input(images)
        size, needed, capped = self.select_bucket(images)
        session = self.sessions[size]
        raw = session.run(None, {session.get_inputs()[0].name: images})
        outputs = {
            o.name: value
            for o, value in zip(session.get_outputs(), raw)
        }
        return DeployResult(outputs, size, needed, capped)


def prepare_image(rgb: np.ndarray, manifest: Dict[str, Any]) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image as the graphs take it: placed on the
    exported canvas as the PyTorch tools place it
    (:func:`mmapt.apis.views.to_canvas`: resized to fit keeping its aspect
    ratio, bilinear, padded bottom/right with 114, the detection test
    pipeline's canvas), in the config's channel order, normalised;
    (1, 3, H, W) float32."""
    from mmapt.apis.views import normalise, to_canvas
    _, _, height, width = manifest['input']['shape']
    canvas = to_canvas(rgb, (height, width))
    if manifest['input'].get('channel_order', 'rgb') == 'bgr':
        canvas = canvas[..., ::-1]
    batch = normalise([canvas], manifest['input']['mean'],
                      manifest['input']['std'])
    return np.ascontiguousarray(batch.numpy())
