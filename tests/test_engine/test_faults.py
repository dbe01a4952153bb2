"""Faults: a process killed while it writes a checkpoint, a training killed
with SIGKILL and resumed, and an fp16 step whose loss overflows.

The killed processes are subprocesses; ``tests/fixtures/faults/
fault_injection.py`` (``MMAPT_KILL=WHAT:N``) sends them SIGKILL at a chosen
point: in the middle of writing a checkpoint file, right after renaming it,
before removing an old one, or at the start of an iteration.
docs/reliability.md says what each test promises. Each subprocess
costs an import of torch + mmengine: the default suite keeps one torn write
and one exact resume of the toy runner; the other cases are marked slow.
"""
import os
import os.path as osp
import signal
import subprocess
import sys
import tempfile

import pytest
import torch
from conftest import ROOT

FAULTS = osp.join(ROOT, 'tests', 'fixtures', 'faults')
TOY_RUNNER = osp.join(FAULTS, 'toy_runner.py')


def _run(args, kill=None, cwd=None, timeout=900):
    """Run ``python ARGS`` with the repo and the fault fixtures on the path,
    one thread, ``MMAPT_KILL=kill``.

    The run gets a session of its own, and whatever of it outlives the main
    process is killed: a dataloader worker of a SIGKILLed training can
    block forever on its result queue, holding the output pipes open.
    """
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT, FAULTS, env.get('PYTHONPATH', '')])
    env['OMP_NUM_THREADS'] = '1'
    env.pop('MMAPT_KILL', None)
    if kill:
        env['MMAPT_KILL'] = kill
    with tempfile.TemporaryFile('w+') as out:
        proc = subprocess.Popen([sys.executable, *args],
                                cwd=cwd or ROOT,
                                env=env,
                                stdout=out,
                                stderr=subprocess.STDOUT,
                                text=True,
                                start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # orphaned workers
            except ProcessLookupError:
                pass
        out.seek(0)
        output = out.read()
    return subprocess.CompletedProcess(proc.args, returncode, output, '')


def _killed(proc):
    assert proc.returncode == -signal.SIGKILL, (
        f'expected the process to be killed, got {proc.returncode}:\n'
        f'{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')


def _ok(proc):
    assert proc.returncode == 0, (f'{proc.returncode}:\n{proc.stdout[-2000:]}'
                                  f'\n{proc.stderr[-4000:]}')


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def _pointed(work_dir):
    """The checkpoint ``last_checkpoint`` names (what ``--resume`` loads)."""
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def _toy(work_dir, hook, kill=None, resume=False, max_iters=4):
    args = [TOY_RUNNER, str(work_dir), hook, '--max-iters', str(max_iters)]
    return _run(args + (['--resume'] if resume else []), kill=kill)


# ------------------------------------------------------ checkpoint writes
@pytest.mark.slow
def test_mmengine_checkpoint_hook_can_lose_every_checkpoint(tmp_path):
    """Why SafeCheckpointHook exists: mmengine 0.10's CheckpointHook with
    max_keep_ckpts=1, killed while writing iter_3.pth, has already removed
    iter_2.pth; last_checkpoint still names it, iter_3.pth is torn, and
    --resume fails. (If this starts failing after an mmengine upgrade,
    mmengine fixed it: update docs/reliability.md.)"""
    _killed(_toy(tmp_path, 'CheckpointHook', kill='write:3'))
    assert _pointed(tmp_path).endswith('iter_2.pth')
    assert not osp.exists(tmp_path / 'iter_2.pth')
    with pytest.raises(Exception):
        _load(tmp_path / 'iter_3.pth')
    proc = _toy(tmp_path, 'CheckpointHook', resume=True)
    assert proc.returncode != 0


@pytest.mark.parametrize(
    'kill, resumed_from',
    [
        ('write:3', 2),  # torn write of iter_3.pth
        # iter_3.pth in place, last_checkpoint not yet
        pytest.param('rename:3', 2, marks=pytest.mark.slow),
        # last_checkpoint updated, iter_2.pth not removed
        pytest.param('remove:2', 3, marks=pytest.mark.slow),
    ])
def test_killed_save_leaves_a_complete_last_checkpoint(tmp_path, kill,
                                                       resumed_from):
    """SafeCheckpointHook killed at any point of saving iter_3.pth:
    last_checkpoint names a complete checkpoint, no torn file carries a
    checkpoint's name, and --resume continues from it to the end."""
    _killed(_toy(tmp_path, 'SafeCheckpointHook', kill=kill))
    pointed = _pointed(tmp_path)
    assert pointed.endswith(f'iter_{resumed_from}.pth')
    assert _load(pointed)['meta']['iter'] == resumed_from
    for name in os.listdir(tmp_path):
        if name.endswith('.pth'):  # every named checkpoint loads
            _load(tmp_path / name)
    if kill.startswith('write'):
        assert not osp.exists(tmp_path / 'iter_3.pth')
        assert osp.exists(tmp_path / '.iter_3.pth.tmp')  # the torn bytes

    proc = _toy(tmp_path, 'SafeCheckpointHook', resume=True)
    _ok(proc)
    assert f'resumed epoch: 0, iter: {resumed_from}' in proc.stdout + \
        proc.stderr
    assert _pointed(tmp_path).endswith('iter_4.pth')
    assert _load(tmp_path / 'iter_4.pth')['meta']['iter'] == 4
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


@pytest.mark.slow
def test_safe_checkpoint_hook_keeps_mmengine_files(tmp_path):
    """Same files as mmengine's hook: max_keep_ckpts respected, the
    message hub's keep_ckpt_ids, and generator states added."""
    _ok(_toy(tmp_path, 'SafeCheckpointHook'))
    assert sorted(n for n in os.listdir(tmp_path)
                  if n.endswith('.pth')) == ['iter_4.pth']
    ckpt = _load(tmp_path / 'iter_4.pth')
    assert ckpt['message_hub']['runtime_info']['keep_ckpt_ids'] == [4]
    assert set(ckpt['rng_state']) >= {'python', 'numpy', 'torch'}
    assert {'state_dict', 'optimizer', 'meta'} <= set(ckpt)


# ------------------------------------------------------- kill and resume
def _max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize(
    'hook, exact',
    [('SafeCheckpointHook', True),
     pytest.param('CheckpointHook', False, marks=pytest.mark.slow)])
def test_resume_draws_the_same_random_numbers(tmp_path, hook, exact):
    """A step that samples from torch's generator (as RoI sampling does):
    killed before its 5th iteration and resumed from iter_4.pth,
    SafeCheckpointHook
    reaches the uninterrupted run's weights; mmengine's hook re-seeds, so
    the resumed steps sample other rows."""
    _ok(_toy(tmp_path / 'full', hook, max_iters=6))
    _killed(_toy(tmp_path / 'cut', hook, kill='iter:4', max_iters=6))
    assert _pointed(tmp_path / 'cut').endswith('iter_4.pth')
    _ok(_toy(tmp_path / 'cut', hook, resume=True, max_iters=6))
    full = _load(tmp_path / 'full' / 'iter_6.pth')
    cut = _load(tmp_path / 'cut' / 'iter_6.pth')
    diff = _max_abs_diff(full['state_dict'], cut['state_dict'])
    if exact:
        assert diff <= 1e-6
    else:
        assert diff > 1e-4


# ------------------------------------------------------ non-finite values
def _apt_model():
    from mmapt.models import APTEVA02
    torch.manual_seed(0)
    model = APTEVA02(
        arch=dict(embed_dims=32, num_layers=2, num_heads=2),
        img_size=128,
        window_size=4,
        global_attn_indexes=(1, ),
        out_indices=(1, ),
        thresholds=(2.0, 2.0))
    with torch.no_grad():  # trained-like APT layers
        model.apt_embed.zero_linear.weight.normal_(std=0.05)
    return model.train()


def _flat_and_noise(batch=2):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 128, 128, generator=gen)
    x[:, :, :64] = 0.3  # a flat band: merged into large patches
    return x


def _apt_params(model):
    return {
        n: p.detach().clone()
        for n, p in model.named_parameters() if n.startswith('apt_embed.')
    }


def _fp16_step(model, optimizer, scaler, x, device, overflow):
    """One mixed-precision step; ``overflow`` scales the fp16 loss past
    65504 so that it is inf."""
    optimizer.zero_grad()
    with torch.autocast(device, dtype=torch.float16):
        (out, ) = model(x)
        loss = out.half().pow(2).mean()
        if overflow:
            loss = loss * torch.tensor(1e5, dtype=torch.float16) * 1e5
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grads = [p.grad for p in model.apt_embed.parameters()]
    grads_finite = all(torch.isfinite(g).all() for g in grads)
    scaler.step(optimizer)
    scaler.update()
    return loss, grads_finite


@pytest.mark.parametrize('device', [
    'cpu',
    pytest.param(
        'cuda',
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason='needs CUDA'))
])
def test_fp16_overflow_step_is_skipped_and_apt_layers_stay_finite(device):
    """GradScaler (what mmengine's AmpOptimWrapper uses; on CPU, where that
    wrapper refuses to run, torch.amp.GradScaler('cpu') directly): an fp16
    step whose loss overflows to inf sends non-finite gradients into
    apt_embed, is skipped (weights and AdamW state untouched), halves the
    scale, and the next step trains normally."""
    model = _apt_model().to(device)
    x = _flat_and_noise().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device, init_scale=2.**10)

    loss, finite = _fp16_step(model, optimizer, scaler, x, device, False)
    assert torch.isfinite(loss) and finite
    before = _apt_params(model)
    state_steps = [
        float(optimizer.state[p]['step'])
        for p in model.apt_embed.parameters()
    ]
    scale = scaler.get_scale()

    loss, finite = _fp16_step(model, optimizer, scaler, x, device, True)
    assert torch.isinf(loss) and not finite  # the overflow reached APT
    after = _apt_params(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # skipped
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [
        float(optimizer.state[p]['step'])
        for p in model.apt_embed.parameters()
    ] == state_steps
    assert scaler.get_scale() == scale / 2

    loss, finite = _fp16_step(model, optimizer, scaler, x, device, False)
    assert torch.isfinite(loss) and finite
    trained = _apt_params(model)
    assert any(not torch.equal(after[n], trained[n]) for n in after)
    assert all(torch.isfinite(p).all() for p in trained.values())


# ------------------------------------- kill and resume: APT detection toy
TINY_APT_DET = osp.join(FAULTS, 'tiny_apt_det.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')


def _scalars(work_dir):
    """Per-iteration logged scalars of every run in ``work_dir``."""
    import glob
    import json
    rows = {}
    for path in sorted(
            glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                rows[row['step']] = row
    return rows


def _history(ckpt, key):
    values, counts = ckpt['message_hub']['log_scalars'][key].data
    return list(map(float, values)) + list(map(float, counts))


@pytest.mark.slow
def test_apt_detection_killed_and_resumed_equals_uninterrupted(tmp_path):
    """tools/train.py on a tiny APT Cascade Mask R-CNN (8 iterations, a
    checkpoint every 2), SIGKILLed at the start of iteration 6 and restarted
    with --resume, ends with the uninterrupted run's weights (<= 1e-6), the
    APT layers' AdamW state, the same losses and token statistics in the
    logs, and the same message-hub history."""
    _ok(
        _run([
            osp.join(ROOT, 'tools', 'misc',
                     'make_toy_coco.py'), 'data/toy_coco', '--num-train', '8',
            '--num-val', '2', '--min-side', '128', '--max-side', '160'
        ],
             cwd=tmp_path))
    full, cut = tmp_path / 'full', tmp_path / 'cut'
    _ok(_run([TRAIN, TINY_APT_DET, '--work-dir', str(full)], cwd=tmp_path))
    _killed(
        _run([TRAIN, TINY_APT_DET, '--work-dir',
              str(cut)],
             kill='iter:5',
             cwd=tmp_path))
    assert _pointed(cut).endswith('iter_4.pth')
    assert not osp.exists(cut / 'iter_6.pth')
    proc = _run([TRAIN, TINY_APT_DET, '--work-dir',
                 str(cut), '--resume'],
                cwd=tmp_path)
    _ok(proc)
    assert 'resumed epoch: 0, iter: 4' in proc.stdout + proc.stderr

    want, got = _load(full / 'iter_8.pth'), _load(cut / 'iter_8.pth')
    assert _max_abs_diff(want['state_dict'], got['state_dict']) <= 1e-6
    # The APT layers trained (their optimizer state matters) ...
    apt = [k for k in want['state_dict'] if '.apt_embed.' in k]
    assert apt
    earlier = _load(full / 'iter_6.pth')['state_dict']
    assert any(not torch.equal(earlier[k], want['state_dict'][k]) for k in apt)
    # ... and every parameter's AdamW state, theirs included, is the same.
    states_want = want['optimizer']['state']
    states_got = got['optimizer']['state']
    assert states_want.keys() == states_got.keys()
    index = {
        name: i
        for group in want['optimizer']['param_groups']
        for name, i in zip(group['param_names'], group['params'])
    }
    # (apt_embed.patch_sizes is the layout record, a state entry with no
    # optimizer state.)
    apt_states = [index[k] for k in apt if k in index]
    assert len(apt_states) == len(apt) - 1
    assert all('exp_avg_sq' in states_want[i] for i in apt_states)
    for i in states_want:
        for name, value in states_want[i].items():
            diff = (value.float() - states_got[i][name].float()).abs().max()
            assert diff <= 1e-6, (i, name)
    # Losses and token statistics of the resumed iterations, as logged.
    logged_want, logged_got = _scalars(full), _scalars(cut)
    for step in range(5, 9):
        for key in ('loss', 'keep_ratio', 'tokens', 'baseline_tokens'):
            assert logged_got[step][key] == pytest.approx(
                logged_want[step][key], abs=1e-6), (step, key)
    assert logged_want[8]['keep_ratio'] < 1  # APT merged patches
    for key in ('train/loss', 'train/keep_ratio', 'train/tokens'):
        assert _history(got, key) == pytest.approx(
            _history(want, key), abs=1e-6)
