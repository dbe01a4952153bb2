# Copyright (c) mmapt contributors. All rights reserved.
"""Checks run by ``tools/train.py`` and ``tools/test.py`` before a Runner is
built, so that a wrong config path, bad APT thresholds, a missing data set, a
missing or broken checkpoint, an output folder that cannot be written or a
CPU-only distributed launch fails at once with a message that says what to
do. The tools print an :class:`InputError` as one line, without a traceback
(:func:`exit_on_input_error`)."""
import contextlib
import logging
import os
import os.path as osp
import sys
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from mmapt.checkpoints.checkpoint_file import checkpoint_file_problem

# What each OpenMMLab scope expects on disk, and how to make a toy stand-in.
DATA_HELP = {
    'mmdet': ('COCO 2017 instances:\n'
              '  {root}annotations/instances_train2017.json\n'
              '  {root}annotations/instances_val2017.json\n'
              '  {root}train2017/*.jpg\n'
              '  {root}val2017/*.jpg\n'
              'Download COCO 2017 there (or symlink it), or make the toy '
              'set and use a toy config:\n'
              '  python tools/misc/make_toy_coco.py data/toy_coco\n'
              '  python tools/train.py configs/toy/toy_apt_det.py'),
    'mmseg': ('ADE20K (ADEChallengeData2016):\n'
              '  {root}images/{{training,validation}}/*.jpg\n'
              '  {root}annotations/{{training,validation}}/*.png\n'
              'Download ADEChallengeData2016 there (or symlink it), or make '
              'the toy set and use a toy config:\n'
              '  python tools/misc/make_toy_ade.py data/toy_ade\n'
              '  python tools/train.py configs/toy/toy_apt_seg.py'),
}

CONVERTER_HELP = (
    'Backbone weights for mmapt come from our converter, e.g. for EVA-02-B:\n'
    '  python tools/model_converters/eva02_to_mmapt.py '
    'eva02_B_pt_in21k_p14.pt checkpoints/eva02_B_pt_in21k_p16_mmapt.pth '
    '--patch-size 16\n'
    '(see docs/detection.md, "Checkpoints"). To train from scratch instead, '
    'pass --cfg-options model.backbone.init_cfg=None')

CONFIG_SUFFIXES = ('.py', '.json', '.yaml', '.yml')


class InputError(Exception):
    """Bad input found before any slow work; the message names the fix."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the command needs does not exist."""


class BadInputError(InputError, ValueError):
    """A setting or file that cannot work."""


class UnwritableOutputError(InputError, PermissionError):
    """An output folder that cannot be created or written."""


def _one_line(err: Exception) -> str:
    """The message of ``err``; of an error re-raised from a dataloader
    worker (the worker's traceback in the message), its last line."""
    message = str(err)
    if 'Original Traceback' in message:
        last = message.strip().splitlines()[-1]
        message = last.split(': ', 1)[-1]
    return message


@contextlib.contextmanager
def exit_on_input_error(status: int = 2):
    """Print an :class:`InputError` (or an importance map file that cannot
    be used, found while the data is read) as one ``Kind: message`` line on
    stderr and exit with ``status`` (other exceptions propagate)."""
    from mmapt.datasets.importance import ImportanceMapError
    try:
        yield
    except (InputError, ImportanceMapError) as err:
        kind = next(
            base.__name__ for base in type(err).__mro__
            if not issubclass(base, (InputError, ImportanceMapError)))
        print(f'{kind}: {_one_line(err)}', file=sys.stderr)
        sys.exit(status)


def check_config_path(path: str) -> None:
    """A config file that exists and that mmengine can read."""
    if osp.isfile(path):
        if not path.endswith(CONFIG_SUFFIXES):
            raise BadInputError(
                f'config {path} is not a config file: expected '
                f'{" / ".join(CONFIG_SUFFIXES)} (the mmapt configs are the '
                '.py files under configs/)')
        return
    raise MissingInputError(
        f'config {path} not found (relative to {os.getcwd()}); the mmapt '
        'configs are under configs/ of the repository, e.g. '
        'configs/toy/toy_apt_det.py')


def check_writable_dir(path: str, what: str) -> None:
    """``path`` is, or can be created as, a folder this process can write
    (nothing is created)."""
    probe = osp.abspath(path)
    while not osp.exists(probe):
        parent = osp.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not osp.isdir(probe):
        raise UnwritableOutputError(
            f'{what} {path} cannot be created: {probe} is a file, not a '
            f'folder; choose another {what}')
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UnwritableOutputError(
            f'{what} {path} cannot be written: no write permission in '
            f'{probe}; choose a {what} you can write')


def check_writable_file(path: str, what: str) -> None:
    """``path`` can be written as a file (its folder exists or can be
    created and is writable; it is not a folder): checked before the work,
    nothing is created."""
    if osp.isdir(path):
        raise UnwritableOutputError(
            f'{what} {path} is a folder: give a file name, e.g. '
            f'{osp.join(path, "out.png")}')
    if osp.exists(path) and not os.access(path, os.W_OK):
        raise UnwritableOutputError(
            f'{what} {path} cannot be written: no write permission on the '
            f'file; choose another {what}')
    try:
        check_writable_dir(osp.dirname(path) or '.', 'folder')
    except UnwritableOutputError as err:
        raise UnwritableOutputError(f'{what} {path}: {err}') from None


def check_checkpoint_path(path: str, what: str) -> None:
    """A local checkpoint that exists and is whole (size and framing only,
    see :func:`~mmapt.checkpoints.checkpoint_file.checkpoint_file_problem`);
    remote URLs are left to the loader."""
    if not path or str(path).startswith(REMOTE_PREFIXES):
        return
    if not osp.exists(path):
        raise MissingInputError(f'{what} {path} not found (relative to '
                                f'{os.getcwd()}); check the path')
    problem = checkpoint_file_problem(path)
    if problem is not None:
        raise BadInputError(f'{what} {problem}')


def _backbone_cfg(cfg: Config) -> dict:
    from mmapt.models.apt import backbone_cfg_of
    return backbone_cfg_of({'model': cfg.get('model')}) or {}


def check_model_args(cfg: Config, config_path: str) -> None:
    """APT thresholds (values, and count against ``patch_sizes``) checked
    from the config, before the model is built."""
    from mmapt.tokenizer import check_thresholds
    backbone = _backbone_cfg(cfg)
    if 'thresholds' not in backbone:
        return
    try:
        check_thresholds(backbone['thresholds'], backbone.get('patch_sizes'),
                         backbone.get('patch_size'))
    except ValueError as err:
        raise BadInputError(f'model.backbone of {config_path}: {err}')


def _config_tokenizer(backbone: dict, **overrides):
    """The tokenizer an APT backbone config builds (its checks run, no
    weights built); None for a plain backbone. KeyError: a backbone type
    mmapt does not register."""
    from mmapt.models.apt import apt_tokenizer_args
    from mmapt.tokenizer import PatchTokenizer
    args = apt_tokenizer_args(backbone)
    return None if args is None else PatchTokenizer(**args, **overrides)


def check_apt_options(cfg: Config, config_path: str) -> None:
    """Every APT option of the backbone (``keep_ratio``, ``token_budget``
    at the backbone's ``img_size``, ``scorer``, ``threshold_floor``,
    ``window_size`` against the largest patch, ...) checked from the config
    by the tokenizer's own validation, before the model is built."""
    from mmapt.models.apt import backbone_class, init_default
    backbone = _backbone_cfg(cfg)
    if 'type' not in backbone:
        return
    where = f'model.backbone of {config_path}'
    try:
        tokenizer = _config_tokenizer(backbone)
        if tokenizer is None:
            return
        img_size = backbone.get(
            'img_size',
            init_default(backbone_class(backbone['type']), 'img_size'))
        if img_size is not None:
            if isinstance(img_size, int):
                img_size = (img_size, img_size)
            tokenizer.budget_for(*img_size)
    except KeyError:  # not an mmapt backbone: its scope's build judges it
        return
    except ValueError as err:
        raise BadInputError(f'{where}: {err}')
    check_importance_settings(cfg, config_path, tokenizer)


IMPORTANCE_TRANSFORMS = ('BoxImportanceMap', 'LoadImportanceMap')


def _type_name(cfg: dict) -> str:
    """``type`` of a config without its scope (``mmdet.X`` -> ``X``)."""
    return str(cfg.get('type', '')).split('.')[-1]


def _pipelines(cfg: Config) -> Iterator[Tuple[str, list]]:
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader') or {}
        for ds in _iter_datasets(loader.get('dataset')):
            if ds.get('pipeline'):
                yield split, ds['pipeline']


def check_importance_settings(cfg: Config, config_path: str,
                              tokenizer) -> None:
    """The importance scorer and its maps go together: every pipeline of
    the config sets a map (``BoxImportanceMap`` / ``LoadImportanceMap``,
    whose own checks run here, ``LoadImportanceMap``'s folder must exist)
    and the data preprocessor is ``APTDataPreprocessor``; maps without the
    importance scorer are refused as the tokenizer would refuse them."""
    from mmapt.registry import TRANSFORMS
    from mmapt.tokenizer import ImportanceScorer
    wants_maps = isinstance(tokenizer.scorer, ImportanceScorer)
    for split, pipeline in _pipelines(cfg):
        steps = [
            step for step in pipeline
            if _type_name(step) in IMPORTANCE_TRANSFORMS
        ]
        where = f'{split} pipeline of {config_path}'
        if wants_maps and not steps:
            raise BadInputError(
                f'{where}: the importance scorer needs a map per image: add '
                'dict(type=\'BoxImportanceMap\') or dict(type='
                '\'LoadImportanceMap\', folder=...) after the Pack*Inputs '
                'step (docs/tokenizer.md, "Per-image data")')
        if steps and not wants_maps:
            raise BadInputError(
                f'{where} sets importance maps but the scorer is '
                f'{tokenizer.scorer.name!r}: use model.backbone.scorer='
                f'dict(type=\'importance\', base=dict(type='
                f'{tokenizer.scorer.name!r})) or drop the map step')
        for step in steps:
            try:
                transform = TRANSFORMS.build(step)
            except (TypeError, ValueError) as err:
                raise BadInputError(f'{where}: {step["type"]}: {err}')
            folder = getattr(transform, 'folder', None)
            if folder is not None and not osp.isdir(folder):
                raise MissingInputError(
                    f'{where}: LoadImportanceMap folder {folder} not found '
                    f'(relative to {os.getcwd()}); write the maps there or '
                    'set its folder=')
    preprocessor = (cfg.get('model') or {}).get('data_preprocessor') or {}
    if wants_maps and _type_name(preprocessor) != 'APTDataPreprocessor':
        raise BadInputError(
            f'model.data_preprocessor of {config_path}: the importance '
            'scorer gets its maps through APTDataPreprocessor: set '
            'data_preprocessor=dict(type=\'APTDataPreprocessor\', '
            'wraps=...) (docs/tokenizer.md, "Per-image data")')


def check_pack_size_option(cfg: Config,
                           config_path: str,
                           split: Optional[str] = None) -> None:
    """``model.backbone.pack_size`` checked from the config, before the
    model is built: its form (the message the backbone gives), and with
    ``split`` (``'train'`` or ``'test'``) its size against that loader's
    batch on the backbone's ``img_size`` canvas. A static size (the largest
    bucket) must hold the coarsest layout of a full batch, and should not
    cap every batch: in budget mode (``keep_ratio`` / ``token_budget``) it
    must hold a full batch's budget; in threshold mode at least a quarter of
    the canvas's base tokens per image (the smallest ``'auto'`` bucket).
    Below that, the results would measure the cap, not the model."""
    from mmapt.tokenizer.layout import check_pack_size_spec
    backbone = _backbone_cfg(cfg)
    if backbone.get('pack_size') is None:
        return
    where = f'model.backbone of {config_path}'
    try:
        spec = check_pack_size_spec(backbone['pack_size'])
    except ValueError as err:
        raise BadInputError(f'{where}: {err}')
    if spec == 'auto' or split is None:
        return
    need = _pack_size_needs(cfg, backbone, split)
    if need is None:
        return
    largest = spec if isinstance(spec, int) else max(spec)
    batch, least, floor, why = need
    if largest >= max(least, floor):
        return
    problem = f'are fewer than its coarsest layout needs ({least})' \
        if largest < least else f'would cap {why} (below {floor})'
    raise BadInputError(
        f'{where}: pack_size={backbone["pack_size"]!r} cannot serve a '
        f'{split} batch of {batch}: {largest} packed tokens {problem}. Use '
        f'pack_size >= {max(least, floor)}, token buckets (a list of sizes, '
        "or 'auto'), or None (exact packing); "
        'docs/backbone.md, "Static-shape mode"')


def _pack_size_needs(cfg: Config, backbone: dict,
                     split: str) -> Optional[Tuple[int, int, int, str]]:
    """(batch, fewest packed tokens of a full batch, the size below which
    (nearly) every batch is capped, what that means) of ``split``'s loader
    on the backbone's canvas; None when the config does not say."""
    from mmapt.tokenizer.layout import default_pack_sizes, min_pack_size
    loader = cfg.get(f'{split}_dataloader') or {}
    batch, img_size = loader.get('batch_size'), backbone.get('img_size')
    if not isinstance(batch, int) or img_size is None:
        return None
    height, width = (img_size, img_size) if isinstance(img_size, int) \
        else tuple(img_size)
    prefix = int(bool(backbone.get('use_cls_token', False))) + \
        int(backbone.get('num_register_tokens', 0) or 0)
    try:  # the backbone's own tokenizer settings, defaults included
        tokenizer = _config_tokenizer(backbone, num_prefix_tokens=prefix)
        per_image = tokenizer and tokenizer.budget_for(height, width)
    except (KeyError, ValueError):
        return None  # the model's own check names that problem
    if tokenizer is None:
        return None  # a plain backbone has no pack size
    grid = tokenizer.grid_size(height, width)
    least = min_pack_size(batch, grid, tokenizer.num_scales, prefix)
    if per_image is not None:
        return (batch, least, batch * (per_image + prefix),
                'every batch to fewer tokens than its budget')
    floor = default_pack_sizes(batch, grid, prefix)[0]
    return (batch, least, floor,
            'nearly every batch: a quarter of its base tokens on the '
            f'{height}x{width} canvas, the smallest \'auto\' bucket')


def warn_compile(cfg: Config) -> Optional[str]:
    """One warning line when ``compile`` is asked for with an APT backbone
    outside its static-shape mode (``pack_size``), where torch.compile
    recompiles or breaks its graph every batch; returns the line (None when
    there is nothing to say)."""
    from mmapt.models.apt import is_apt_backbone_cfg
    backbone = _backbone_cfg(cfg)
    if not cfg.get('compile') or backbone.get('pack_size') or \
            not is_apt_backbone_cfg(cfg):
        return None
    msg = ('compile: the APT backbone makes a different number of tokens '
           'for every batch (graph breaks at Tensor.item(), recompilation), '
           'so torch.compile makes training slower, not faster; set '
           'model.backbone.pack_size for static shapes or drop compile '
           '(docs/backbone.md, "torch.compile"); to run inference compiled, '
           "set model.backbone.accelerate='compile' (tools/test.py "
           '--accelerate compile) instead')
    print_log(msg, logger='current', level=logging.WARNING)
    return msg


REMOTE_PREFIXES = ('http://', 'https://', 'open-mmlab://', 'torchvision://',
                   'mmcls://', 'pavi://', 's3://', 'modelzoo://')


def _iter_datasets(dataset_cfg) -> Iterator[ConfigDict]:
    """Yield the leaf dataset configs (through Repeat/Concat/ClassBalanced
    wrappers)."""
    if dataset_cfg is None:
        return
    if isinstance(dataset_cfg, (list, tuple)):
        for d in dataset_cfg:
            yield from _iter_datasets(d)
        return
    if 'datasets' in dataset_cfg:
        yield from _iter_datasets(dataset_cfg['datasets'])
    elif 'dataset' in dataset_cfg:
        yield from _iter_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def _join(root: Optional[str], path: str) -> str:
    if not root or osp.isabs(path):
        return path
    return osp.join(root, path)


def missing_data_paths(cfg: Config, splits: Tuple[str, ...]) -> List[str]:
    """Paths that the given dataloaders need but that do not exist.

    Args:
        cfg (Config): The (merged) config.
        splits (tuple[str]): Dataloader names, e.g. ``('train', 'val')``.

    Returns:
        list[str]: Missing directories and files, in order, without repeats.
    """
    missing: List[str] = []

    def need(path: str) -> None:
        if path and not osp.exists(path) and path not in missing:
            missing.append(path)

    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for ds in _iter_datasets(loader.get('dataset')):
            root = ds.get('data_root')
            if root:
                need(root)
            ann_file = ds.get('ann_file')
            if ann_file:
                need(_join(root, ann_file))
            prefix = ds.get('data_prefix') or {}
            for value in prefix.values():
                if isinstance(value, str) and value:
                    need(_join(root, value))
    return missing


def check_data(cfg: Config, config_path: str, splits: Tuple[str, ...]) -> None:
    """Raise ``FileNotFoundError`` naming the config, the missing paths, the
    expected layout and the toy-data command when a data set is missing."""
    missing = missing_data_paths(cfg, splits)
    if not missing:
        return
    scope = cfg.get('default_scope', 'mmdet')
    roots = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader') or {}
        for ds in _iter_datasets(loader.get('dataset')):
            if ds.get('data_root') and ds['data_root'] not in roots:
                roots.append(ds['data_root'])
    root = roots[0] if roots else ''
    if root and not root.endswith('/'):
        root += '/'
    layout = DATA_HELP.get(scope, 'the layout described by the config')
    raise MissingInputError(
        f'Data set of config {config_path} not found: missing '
        f'{", ".join(missing)} (relative to {os.getcwd()}).\n'
        f'Expected {layout.format(root=root)}\n'
        'Or point the config elsewhere with --cfg-options, e.g. '
        'train_dataloader.dataset.data_root=/path/to/data/')


def _local_missing(path: Optional[str]) -> bool:
    return bool(path) and not str(path).startswith(REMOTE_PREFIXES) and \
        not osp.isfile(path)


def check_checkpoints(cfg: Config, config_path: str, check_init: bool) -> None:
    """Raise an :class:`InputError` when ``load_from`` (a ``--resume``
    path included) or (with ``check_init``) a ``Pretrained`` init checkpoint
    of the backbone is a local file that does not exist or is broken."""
    load_from = cfg.get('load_from')
    if _local_missing(load_from) and cfg.get('resume', False):
        raise MissingInputError(
            f'--resume {load_from}: checkpoint not found; pass an existing '
            'checkpoint, or --resume without a path to resume from the '
            'latest checkpoint of the work dir')
    if _local_missing(load_from):
        raise MissingInputError(
            f'load_from={load_from!r} of config {config_path} not found. '
            'Train the detector/segmentor it names first (its config is in '
            'the comment of this config), or pass --cfg-options '
            'load_from=PATH.')
    check_checkpoint_path(load_from, 'load_from')
    if not check_init:
        return
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    init_cfg = backbone.get('init_cfg')
    for init in (init_cfg if isinstance(init_cfg, list) else [init_cfg]):
        if not init or init.get('type') != 'Pretrained':
            continue
        ckpt = init.get('checkpoint')
        if _local_missing(ckpt):
            raise MissingInputError(
                f'Backbone checkpoint {ckpt!r} (model.backbone.init_cfg of '
                f'config {config_path}) not found.\n{CONVERTER_HELP}')
        check_checkpoint_path(ckpt, 'model.backbone.init_cfg.checkpoint')


def setup_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Make a distributed launch work without CUDA.

    Without GPUs the nccl backend and ``DistributedDataParallel(device_ids=
    [local_rank])`` both fail. This switches ``env_cfg.dist_cfg.backend`` to
    gloo, wraps the model with ``device_ids=None`` and initialises the
    process group here (mmengine's launcher calls
    ``torch.cuda.set_device``).

    Returns:
        bool: Whether anything was changed (False with CUDA or no launcher).
    """
    import torch
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    if launcher == 'pytorch' and not dist.is_initialized():
        dist.init_process_group(backend=dist_cfg['backend'])
    return True


def add_cfg_options(parser, whose: str = 'the config') -> None:
    """Add ``--cfg-options key=value ...`` (mmengine's ``DictAction``), as
    every tool that reads a config takes it; ``whose``: the configs it
    overrides, for the help (e.g. ``'both configs'``)."""
    from mmengine.config import DictAction
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help=f'override settings of {whose}, key=value (e.g. '
        'train_cfg.max_iters=100 model.backbone.arch=tiny)')


def add_runner_args(parser) -> None:
    """Add the arguments shared by tools/train.py and tools/test.py:
    ``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--local_rank``."""
    parser.add_argument(
        '--work-dir', help='the directory for logs, checkpoints, metrics')
    add_cfg_options(parser)
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_runner_config(args) -> Config:
    """Read ``args.config``, apply ``--cfg-options``, set the launcher and
    the work dir (``--work-dir``, else the config's, else
    ``work_dirs/<config name>``); export ``LOCAL_RANK`` if unset. The config
    path, the APT thresholds and the work dir are checked
    (:class:`InputError`), and the form of ``pack_size``."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    check_config_path(args.config)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    check_model_args(cfg, args.config)
    check_apt_options(cfg, args.config)
    check_pack_size_option(cfg, args.config)
    check_writable_dir(cfg.work_dir, 'work dir')
    return cfg


def build_runner(cfg: Config):
    """mmengine's Runner, or the config's ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
