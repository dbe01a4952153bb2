# Copyright (c) mmapt contributors. All rights reserved.
"""Checks run by ``tools/train.py`` and ``tools/test.py`` before a Runner is
built, so that a missing data set, a missing checkpoint or a CPU-only
distributed launch fails at once with a message that says what to do."""
import os
import os.path as osp
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config, ConfigDict

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
    raise FileNotFoundError(
        f'Data set of config {config_path} not found: missing '
        f'{", ".join(missing)} (relative to {os.getcwd()}).\n'
        f'Expected {layout.format(root=root)}\n'
        'Or point the config elsewhere with --cfg-options, e.g. '
        'train_dataloader.dataset.data_root=/path/to/data/')


def _local_missing(path: Optional[str]) -> bool:
    return bool(path) and not str(path).startswith(REMOTE_PREFIXES) and \
        not osp.isfile(path)


def check_checkpoints(cfg: Config, config_path: str, check_init: bool) -> None:
    """Raise ``FileNotFoundError`` when ``load_from`` or (with
    ``check_init``) a ``Pretrained`` init checkpoint of the backbone is a
    local file that does not exist."""
    load_from = cfg.get('load_from')
    if _local_missing(load_from) and not cfg.get('resume', False):
        raise FileNotFoundError(
            f'load_from={load_from!r} of config {config_path} not found. '
            'Train the detector/segmentor it names first (its config is in '
            'the comment of this config), or pass --cfg-options '
            'load_from=PATH.')
    if not check_init:
        return
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    init_cfg = backbone.get('init_cfg')
    for init in (init_cfg if isinstance(init_cfg, list) else [init_cfg]):
        if not init or init.get('type') != 'Pretrained':
            continue
        ckpt = init.get('checkpoint')
        if _local_missing(ckpt):
            raise FileNotFoundError(
                f'Backbone checkpoint {ckpt!r} (model.backbone.init_cfg of '
                f'config {config_path}) not found.\n{CONVERTER_HELP}')


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


def add_cfg_options(parser) -> None:
    """Add ``--cfg-options key=value ...`` (mmengine's ``DictAction``), as
    every tool that reads a config takes it."""
    from mmengine.config import DictAction
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value (e.g. '
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
    ``work_dirs/<config name>``); export ``LOCAL_RANK`` if unset."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config):
    """mmengine's Runner, or the config's ``runner_type``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
