"""The user-facing tools of issue 13: Slurm launchers (with a stand-in
``srun``), print_config, browse_dataset on the toy sets (ground truth and
patch grid after the training pipeline), ``tools/test.py --tta``, and
check_install on the CPU."""
import glob
import os
import os.path as osp
import stat

import pytest
import torch
from conftest import ROOT, run_tool

TOY_APT_DET = 'configs/toy/toy_apt_det.py'
TOY_APT_SEG = 'configs/toy/toy_apt_seg.py'


@pytest.fixture(scope='module')
def fake_srun(tmp_path_factory):
    """A PATH folder whose ``srun`` prints its arguments, one per line."""
    folder = tmp_path_factory.mktemp('fakebin')
    srun = folder / 'srun'
    srun.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n'
                    'echo "PYTHONPATH=$PYTHONPATH"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    return dict(PATH=f'{folder}{os.pathsep}{os.environ["PATH"]}')


def test_slurm_train_builds_the_srun_command(fake_srun):
    env = dict(fake_srun, GPUS='16', SRUN_ARGS='--quotatype=auto -x n1')
    proc = run_tool([
        'tools/slurm_train.sh', 'part', 'job', 'configs/apt_vitdet_coco.py',
        'work_dirs/x', '--amp'
    ],
                    env=env)
    args = proc.stdout.splitlines()
    assert args[:2] == ['-p', 'part']
    for expected in ('--job-name=job', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--quotatype=auto', '-x', 'n1'):
        assert expected in args
    script = args.index(osp.join(ROOT, 'tools', 'train.py'))
    # (run_tool makes the paths of repository files absolute)
    assert args[script + 1:script + 7] == [
        osp.join(ROOT, 'configs/apt_vitdet_coco.py'), '--work-dir',
        'work_dirs/x', '--amp', '--launcher', 'slurm'
    ]
    assert f'PYTHONPATH={ROOT}' in proc.stdout


def test_slurm_test_passes_checkpoint_and_options(fake_srun):
    proc = run_tool([
        'tools/slurm_test.sh', 'part', 'job', 'configs/apt_upernet_ade20k.py',
        'ckpt.pth', '--tta'
    ],
                    env=dict(fake_srun, GPUS='4'))
    args = proc.stdout.splitlines()
    assert '--gres=gpu:4' in args and '--ntasks=4' in args
    script = args.index(osp.join(ROOT, 'tools', 'test.py'))
    assert args[script + 1:script + 6] == [
        osp.join(ROOT, 'configs/apt_upernet_ade20k.py'), 'ckpt.pth', '--tta',
        '--launcher', 'slurm'
    ]
    usage = run_tool(['tools/slurm_test.sh', 'part', 'job', 'cfg.py'],
                     check=False)
    assert usage.returncode == 2 and 'usage:' in usage.stderr


def test_print_config_merges_bases_and_options(tmp_path):
    out = tmp_path / 'full.py'
    proc = run_tool([
        'tools/misc/print_config.py', 'configs/apt_upernet_ade20k.py',
        '--cfg-options', 'model.backbone.thresholds=(5.5,)', '--save-path',
        str(out)
    ])
    assert "type='APTEVA02'" in proc.stdout  # from the APT config
    assert "type='UPerHead'" in proc.stdout  # from _base_/models
    assert 'thresholds=(5.5, )' in proc.stdout
    assert 'thresholds=(5.5, )' in out.read_text()


@pytest.fixture(scope='module')
def toy_ade_cwd(tmp_path_factory):
    cwd = tmp_path_factory.mktemp('toy_ade_cwd')
    run_tool([
        'tools/misc/make_toy_ade.py',
        str(cwd / 'data' / 'toy_ade'), '--num-train', '4', '--num-val', '2'
    ])
    return cwd


def test_browse_dataset_draws_the_lsj_canvas_of_toy_coco(toy_coco_cwd):
    out = toy_coco_cwd / 'browse'
    proc = run_tool([
        'tools/analysis/browse_dataset.py', TOY_APT_DET, '--num', '3',
        '--output-dir',
        str(out)
    ],
                    cwd=str(toy_coco_cwd))
    pictures = sorted(glob.glob(str(out / '*.png')))
    assert len(pictures) == 3
    # The toy canvas is 256 x 256: 16 x 16 = 256 base cells per image.
    lines = [line for line in proc.stdout.splitlines() if 'tokens /' in line]
    assert len(lines) == 3 and all('/ 256 (' in line for line in lines)
    assert 'mean tokens kept' in proc.stdout


@pytest.mark.slow
def test_browse_dataset_segmentation_and_thresholds(toy_ade_cwd):
    out = toy_ade_cwd / 'browse'
    proc = run_tool([
        'tools/analysis/browse_dataset.py', 'configs/toy/toy_eva02_seg.py',
        '--split', 'val', '--num', '2', '--thresholds', '1e9', '--output-dir',
        str(out)
    ],
                    cwd=str(toy_ade_cwd))
    assert len(glob.glob(str(out / '*.png'))) == 2
    # A threshold no entropy reaches merges everything into 32-px patches.
    for line in proc.stdout.splitlines():
        if 'tokens /' in line:
            tokens, base = line.split(': ', 1)[1].split(' tokens / ')
            assert int(tokens) * 4 == int(base.split()[0])


def test_browse_dataset_learned_scorer_weights(toy_coco_cwd, tmp_path):
    """No model is built, so a learned scorer's weights come from
    --scorer-checkpoint; without them the tool stops with the fix, not a
    traceback from the first image."""
    config = tmp_path / 'toy_apt_det_learned.py'
    config.write_text(f'_base_ = [{osp.join(ROOT, TOY_APT_DET)!r}]\n'
                      'model = dict(backbone=dict(keep_ratio=0.5, '
                      "scorer=dict(type='learned')))\n")
    from mmapt.tokenizer import build_scorer
    torch.manual_seed(0)
    net = build_scorer(dict(type='learned')).network
    weights = tmp_path / 'scorer.pth'
    torch.save(
        dict(state_dict={
            'scorer.' + k: v
            for k, v in net.state_dict().items()
        }), weights)
    out = tmp_path / 'browse'
    command = [
        'tools/analysis/browse_dataset.py',
        str(config), '--num', '2', '--output-dir',
        str(out)
    ]
    refused = run_tool(command, cwd=str(toy_coco_cwd), check=False)
    assert refused.returncode == 2
    assert '--scorer-checkpoint PATH' in refused.stderr
    assert 'Traceback' not in refused.stderr
    proc = run_tool(
        command + ['--scorer-checkpoint', str(weights)], cwd=str(toy_coco_cwd))
    lines = [line for line in proc.stdout.splitlines() if 'tokens /' in line]
    # Budget mode: about half of the 16 x 16 base cells of the toy canvas
    # (at most the budget; merges are 4, 16 or 64 cells at a time).
    assert len(lines) == 2
    assert all(120 <= int(x.split(': ')[1].split()[0]) <= 128 for x in lines)
    assert len(glob.glob(str(out / '*.png'))) == 2
    wrong = run_tool([
        'tools/analysis/browse_dataset.py', TOY_APT_DET, '--scorer-checkpoint',
        str(weights)
    ],
                     cwd=str(toy_coco_cwd),
                     check=False)
    assert wrong.returncode == 2 and 'not a learned scorer' in wrong.stderr


def test_browse_dataset_names_the_missing_data(tmp_path):
    proc = run_tool(['tools/analysis/browse_dataset.py', TOY_APT_DET],
                    cwd=str(tmp_path),
                    check=False)
    assert proc.returncode != 0
    assert 'make_toy_coco.py' in proc.stderr


@pytest.fixture(scope='module')
def random_seg_checkpoint(tmp_path_factory):
    """A toy APT segmentor with random weights, saved as a checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(ROOT, TOY_APT_SEG))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('ckpt') / 'random.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return str(path)


@pytest.mark.slow
def test_test_py_tta_merges_augmented_predictions(toy_ade_cwd,
                                                  random_seg_checkpoint):
    config = toy_ade_cwd / 'toy_apt_seg_tta.py'
    config.write_text(
        f"_base_ = ['{osp.join(ROOT, TOY_APT_SEG)}']\n"
        'tta_pipeline = [\n'
        "    dict(type='LoadImageFromFile'),\n"
        "    dict(type='TestTimeAug', transforms=[\n"
        "        [dict(type='Resize', scale_factor=r, keep_ratio=True)\n"
        '         for r in (0.75, 1.0)],\n'
        "        [dict(type='RandomFlip', prob=p, direction='horizontal')\n"
        '         for p in (0.0, 1.0)],\n'
        "        [dict(type='LoadAnnotations', reduce_zero_label=True)],\n"
        "        [dict(type='PackSegInputs')]])]\n")
    proc = run_tool([
        'tools/test.py',
        str(config), random_seg_checkpoint, '--tta', '--work-dir', 'w_tta'
    ],
                    cwd=str(toy_ade_cwd))
    assert 'mIoU' in proc.stdout + proc.stderr
    assert osp.isfile(toy_ade_cwd / 'w_tta' / 'test_metrics.json')


def test_test_py_tta_needs_a_tta_config(toy_coco_cwd, tmp_path):
    ckpt = tmp_path / 'empty.pth'
    ckpt.write_bytes(b'')
    proc = run_tool(['tools/test.py', TOY_APT_DET,
                     str(ckpt), '--tta'],
                    cwd=str(toy_coco_cwd),
                    check=False)
    assert proc.returncode != 0
    assert 'defines no tta_model / tta_pipeline' in proc.stderr


@pytest.mark.slow
def test_check_install_on_cpu():
    proc = run_tool(['tools/misc/check_install.py', '--device', 'cpu'])
    assert 'mmcv 2.1.0' in proc.stdout
    assert 'toy_apt_det.py on cpu:' in proc.stdout
    assert proc.stdout.strip().endswith('installation OK')
