"""Export a config's model to ONNX: one graph per token bucket + manifest.

Detector configs export the backbone and its neck (features out); mmseg
segmentor configs export the whole segmentor in tensor mode for one crop
size (the decode head's logits out). The APT tokenizer is inside every
graph: the input is a normalised image batch. APT configs also export the
tokenizer alone (:class:`~mmapt.deploy.graphs.TokenCountGraph`), from which
the runtime chooses the bucket of an image exactly as static mode does.
"""
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .graphs import (FeatureGraph, SegmentorGraph, TokenCountGraph,
                     apt_adapter, fixed_pack_size)
from .manifest import (HASH_KEY, MANIFEST_FORMAT, config_hash, file_sha256,
                       write_manifest)
from .onnx_export import export_onnx

INPUT_NAME = 'image'
COUNT_OUTPUT = 'packed_tokens'


def require_deploy_packages() -> None:
    """ImportError naming the install command when onnx / onnxscript /
    onnxruntime are missing."""
    missing = []
    for name in ('onnx', 'onnxscript', 'onnxruntime'):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ImportError(
            f'{", ".join(missing)} not installed: the ONNX export and runtime '
            'need them. Install with: pip install .[deploy] (or pip install '
            '-r requirements/deploy.txt)')


def task_of(cfg: Any) -> str:
    """``'segmentation'`` for mmseg segmentors, else ``'detection'``."""
    if 'decode_head' in cfg.model or cfg.get('default_scope') == 'mmseg':
        return 'segmentation'
    return 'detection'


def preprocessing(cfg: Any) -> Dict[str, Any]:
    """mean, std and channel order of a config's data preprocessor."""
    pre = cfg.model.get('data_preprocessor', None) or {}
    while 'preprocessor' in pre:  # APTDataPreprocessor wraps the usual one
        pre = pre['preprocessor']
    return dict(
        mean=[float(v) for v in pre.get('mean', (123.675, 116.28, 103.53))],
        std=[float(v) for v in pre.get('std', (58.395, 57.12, 57.375))],
        # mmcv decodes BGR; bgr_to_rgb makes the model see RGB.
        channel_order='rgb' if pre.get('bgr_to_rgb', False) else 'bgr')


def default_input_size(cfg: Any, task: str) -> Tuple[int, int]:
    """The canvas a config's test images are padded to (detection: the
    backbone's ``img_size``) or its crop (segmentation: ``crop_size`` of
    slide inference, else the preprocessor's ``size``)."""

    def pair(value) -> Tuple[int, int]:
        return (value, value) if isinstance(value, int) else tuple(value)

    if task == 'segmentation':
        test_cfg = cfg.model.get('test_cfg') or {}
        size = test_cfg.get('crop_size') or (cfg.model.get(
            'data_preprocessor', None) or {}).get('size')
        if size:
            return pair(size)
    size = cfg.model.backbone.get('img_size')
    if size is None:
        raise ValueError('the config sets no backbone img_size: give the '
                         'input size (--shape H W)')
    return pair(size)


def input_entry(cfg: Any,
                input_size: Optional[Tuple[int, int]] = None,
                batch_size: int = 1) -> Dict[str, Any]:
    """The manifest's ``input`` entry of a config: name, (B, 3, H, W)
    shape (``input_size`` None: :func:`default_input_size`), mean, std and
    channel order (:func:`preprocessing`)."""
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    height, width = input_size or default_input_size(cfg, task_of(cfg))
    return dict(
        name=INPUT_NAME,
        shape=[batch_size, 3, height, width],
        **preprocessing(cfg))


def build_model(cfg: Any,
                checkpoint: Optional[str] = None,
                trust: Optional[bool] = None) -> nn.Module:
    """The config's detector / segmentor in eval mode on the CPU, weights
    from ``checkpoint`` (loaded without running code unless ``trust``)."""
    from mmengine.registry import init_default_scope

    import mmapt.models  # noqa: F401  (registers the backbones)
    task = task_of(cfg)
    init_default_scope('mmseg' if task == 'segmentation' else 'mmdet')
    if task == 'segmentation':
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        from mmengine.runner import load_checkpoint

        from mmapt.engine import safe_checkpoint_loading
        with safe_checkpoint_loading(trust):
            load_checkpoint(model, checkpoint, map_location='cpu')
    return model.eval()


def resolve_buckets(backbone: nn.Module, batch: int, height: int, width: int,
                    buckets: Optional[Sequence[int]]) -> List[Optional[int]]:
    """The pack sizes to export: ``buckets`` as given (sorted), else the
    config's (``pack_size`` int / list / ``'auto'``; the ``'auto'`` ones in
    exact mode); ``[None]`` for a plain backbone."""
    adapter = apt_adapter(backbone)
    if adapter is None:
        if buckets:
            raise ValueError(
                f'{type(backbone).__name__} is a plain backbone: it exports '
                'as one graph, drop --bucket (buckets are APT pack sizes)')
        return [None]
    adapter.check_input_size(height, width)
    if buckets:
        from mmapt.tokenizer.layout import check_pack_size_spec
        sizes = check_pack_size_spec(sorted(set(int(b) for b in buckets)))
        return [sizes] if isinstance(sizes, int) else list(sizes)
    tokenizer = adapter.tokenizer
    grid = tokenizer.grid_size(height, width)
    return list(
        adapter.pack_sizes(batch, height, width)
        or tokenizer.auto_pack_sizes(batch, grid))


def _stamp(path: str, metadata: Dict[str, str]) -> None:
    """Write ``metadata`` into an ONNX file's ``metadata_props``."""
    import onnx
    model = onnx.load(path)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, path)


def _output_names(outputs: Any, task: str) -> List[str]:
    if task == 'segmentation':
        return ['seg_logits']
    return [f'feat{i}' for i in range(len(outputs))]


def export_deployment(
        config: Union[str, Any],
        out_dir: str,
        checkpoint: Optional[str] = None,
        buckets: Optional[Sequence[int]] = None,
        input_size: Optional[Tuple[int, int]] = None,
        batch_size: int = 1,
        trust: Optional[bool] = None,
        model: Optional[nn.Module] = None,
        bucket_fit: Optional[Dict[str, Any]] = None,
        matched_thresholds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Export a config's model to ``out_dir``: one ONNX file per bucket
    (one for a plain backbone), the token-count graph of an APT backbone,
    and ``deploy.json``.

    Args:
        config (str | Config): Config file or loaded ``Config``.
        out_dir (str): Folder for the files (created).
        checkpoint (str, optional): Weights; None: the config's init.
        buckets (Sequence[int], optional): Pack sizes in packed tokens
            (prefix tokens included); None: the config's ``pack_size``
            list / int, or the ``'auto'`` buckets.
        input_size (tuple[int, int], optional): (H, W) of the graphs' input;
            None: :func:`default_input_size`.
        batch_size (int): Images per run. Defaults to 1.
        trust (bool, optional): Load the checkpoint as a full pickle.
        model (nn.Module, optional): The config's model, already built
            (then ``checkpoint`` is not read).
        bucket_fit (dict, optional): How ``buckets`` were fitted to
            calibration images (:meth:`~mmapt.deploy.buckets.BucketFit.
            summary`), recorded in the manifest as ``bucket_fit``.
        matched_thresholds (dict, optional): How a budget-mode config's
            keep ratio was matched to its thresholds' mean token count
            (:func:`~mmapt.deploy.buckets.matched_keep_ratio`), recorded in
            the manifest as ``matched_thresholds``.

    Returns:
        dict: The manifest written to ``out_dir/deploy.json``.
    """
    require_deploy_packages()
    from mmengine.config import Config

    import mmapt
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
    task = task_of(cfg)
    digest = config_hash(cfg)  # before building: builders edit cfg.model
    if model is None:
        model = build_model(cfg, checkpoint, trust)
    model.eval()
    entry = input_entry(cfg, input_size, batch_size)
    height, width = entry['shape'][2:]
    backbone = model.backbone
    scorer = getattr(
        getattr(apt_adapter(backbone), 'tokenizer', None), 'scorer', None)
    if getattr(scorer, 'name', None) == 'importance':
        raise ValueError(
            'the importance scorer needs a per-image importance map as a '
            'second input, which the ONNX export does not take: export a '
            'config with the entropy / contrast / gradient scorer')
    graph = SegmentorGraph(model) if task == 'segmentation' else \
        FeatureGraph(backbone, getattr(model, 'neck', None))
    sizes = resolve_buckets(backbone, batch_size, height, width, buckets)
    example = torch.zeros(batch_size, 3, height, width)
    metadata = {HASH_KEY: digest, 'mmapt_config': name}
    os.makedirs(out_dir, exist_ok=True)
    files, outputs = [], None
    for size in sizes:
        fname = f'{name}_b{size}.onnx' if size else f'{name}.onnx'
        path = osp.join(out_dir, fname)
        with fixed_pack_size(backbone, size):
            with torch.no_grad():
                outputs = graph(example)
            export_onnx(
                graph,
                example,
                path,
                input_names=[INPUT_NAME],
                output_names=_output_names(outputs, task))
        _stamp(path, dict(metadata, mmapt_pack_size=str(size or 0)))
        files.append(
            dict(pack_size=size, file=fname, sha256=file_sha256(path)))
    count = fixed = None
    if apt_adapter(backbone) is not None:
        # Budget mode: every batch has the same count, so the runtime picks
        # its bucket without running the count graph.
        tokenizer = apt_adapter(backbone).tokenizer
        fixed = tokenizer.budget_packed_tokens(
            batch_size, tokenizer.grid_size(height, width))
        fname = f'{name}_count.onnx'
        path = osp.join(out_dir, fname)
        export_onnx(
            TokenCountGraph(backbone),
            example,
            path,
            input_names=[INPUT_NAME],
            output_names=[COUNT_OUTPUT])
        _stamp(path, metadata)
        count = dict(file=fname, sha256=file_sha256(path))
    outs = outputs if isinstance(outputs, (tuple, list)) else (outputs, )
    manifest = dict(
        format=MANIFEST_FORMAT,
        config=name,
        config_hash=digest,
        task=task,
        mmapt_version=mmapt.__version__,
        torch_version=torch.__version__,
        input=entry,
        outputs=[
            dict(name=n, shape=list(o.shape))
            for n, o in zip(_output_names(outs, task), outs)
        ],
        apt=apt_adapter(backbone) is not None,
        buckets=files,
        count_graph=count,
        fixed_packed_tokens=fixed)
    if bucket_fit is not None:
        manifest['bucket_fit'] = bucket_fit
    if matched_thresholds is not None:
        manifest['matched_thresholds'] = matched_thresholds
    write_manifest(out_dir, manifest)
    return manifest
