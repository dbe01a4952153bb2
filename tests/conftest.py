"""Shared fixtures of the detection tests: running the tools in a subprocess
and a small generated toy COCO set."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

#: The test folder (fixtures/ lives here) and the repository root: tests
#: in sub-folders import these instead of counting ``dirname`` levels.
TESTS_DIR = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(TESTS_DIR)


def run_tool(args, cwd=ROOT, check=True, timeout=900, env=None):
    """Run ``python ARGS`` (paths relative to the repo root are resolved)
    with the repo on PYTHONPATH; raise with the output tail on failure when
    ``check``."""
    full_env = dict(os.environ)
    full_env['PYTHONPATH'] = ROOT + os.pathsep + full_env.get('PYTHONPATH', '')
    # One thread per process: on a shared 2-core machine OpenMP threads that
    # wait for each other make CPU training several times slower.
    full_env.setdefault('OMP_NUM_THREADS', '1')
    full_env.update(env or {})
    args = [
        osp.join(ROOT, a) if a.endswith(('.py', '.sh')) and not osp.isabs(a)
        and osp.exists(osp.join(ROOT, a)) else a for a in args
    ]
    cmd = args if args[0].endswith('.sh') or args[0] == 'bash' else \
        [sys.executable] + args
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f'{cmd} failed ({proc.returncode}):\n'
                             f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}')
    return proc


def flat_and_noise_images(batch, height, width, flat, seed=0):
    """Images normalised with the ImageNet statistics: uniform noise (no
    patch merges) with flat regions (merge into large patches): image 0's
    top-left ``flat = (rows, cols)`` box and the last image's rows from
    ``rows`` down."""
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(batch, 3, height, width, generator=gen) * 255
    pixels[0, :, :flat[0], :flat[1]] = 200.
    pixels[-1, :, flat[0]:, :] = 30.
    return (pixels - mean) / std


def assert_batch_equals_alone(backbone, images, rtol=1e-5, atol=1e-5):
    """Each image's maps from a batch equal that image run alone: nothing
    leaks across the images packed together."""
    with torch.no_grad():
        both = backbone(images)
        for i in range(images.shape[0]):
            alone = backbone(images[i:i + 1])
            for a, b in zip(both, alone):
                torch.testing.assert_close(a[i:i + 1], b, rtol=rtol, atol=atol)


@pytest.fixture(scope='session')
def toy_coco_cwd(tmp_path_factory):
    """A directory holding ``data/toy_coco`` (24 train, 8 val images), to be
    used as the working directory of the toy configs' relative data_root."""
    cwd = tmp_path_factory.mktemp('toy_coco_cwd')
    run_tool([
        'tools/misc/make_toy_coco.py',
        str(cwd / 'data' / 'toy_coco'), '--num-train', '24', '--num-val', '8'
    ])
    return cwd


def marked_module():
    """A bare module that marks stages by hand (``with forward_stage(owner,
    'tokenizer'): ...``), for tests of the stage listeners."""
    from mmapt.models.stages import StageMarks

    class Marked(torch.nn.Module, StageMarks):
        pass

    return Marked()
