"""One-command GPU benchmark of the EVA-02 backbones: APT against plain.

    bash tools/analysis/gpu_benchmark.sh OUT_DIR --images data/photos
    python tools/analysis/gpu_benchmark.py --images DIR --out OUT_DIR
    python tools/analysis/gpu_benchmark.py --device cpu --quick --images DIR \
        --out FILE                   # tiny model, small canvas: a smoke test

Needs torch, numpy, Pillow, mmengine and mmapt (no mmcv / mmdet / mmseg).
Images: ``--images DIR`` (JPEG/PNG or (H, W, 3) uint8 ``.npy``), else the
photographs scikit-image ships (``tools/misc/sample_photos.py`` copies
them), each prepared like the detection test pipeline (long side to the
canvas, padded to a square).

For each architecture (EVA-02-B and -L at 1536 by default; ViTDet windows of
32 tokens and the detection configs' global blocks), plain and APT share the
same random weights, run under autocast (``--dtype``, bf16 by default) with
batch 1 and are timed on the arms of :mod:`mmapt.benchmark.arch_bench`
(plain and APT on the square canvas, window- / patch-padded views, CUDA
graphs, ``torch.compile``, APT's static mode, no-merge APT, the padded
attention plan), repeats interleaved. Every arm ends up timed (``arms``) or
listed with the reason: ``skipped``, ``failed`` or ``cut``; ``arm_info``
says what each arm ran (attention kernel, peak CUDA memory, compile
record). Also: outputs against their eager references (``checks``), the
stage split (``stages``), aten ops and host syncs (``overhead``), a
``torch.profiler`` table of one APT forward (``profile``) and training
speed (``training``, ``--train-archs``).

The JSON (``--out``) and a Markdown summary next to it (``.md``) are
written after every warm-up, repeat and later part. ``--budget-s`` is
checked between the calls of every warm-up, training step and repeat; a
SIGINT (``gpu_benchmark.sh``'s time limit) marks what was left as ``cut``
and writes the report before exiting; one that comes while the modules
load stops the tool once they are loaded, before anything runs.
"""
import signal
import sys
from contextlib import contextmanager


@contextmanager
def sigint_after_block():
    """A SIGINT inside the block is held and raised (KeyboardInterrupt)
    when the block ends. Third-party import code can swallow a
    KeyboardInterrupt raised inside it (mpmath, which torch imports through
    sympy, looks for gmpy2 under a bare ``except: pass``): the stop would
    be lost and the run go on as if never stopped."""
    came = []
    previous = signal.signal(signal.SIGINT, lambda *_: came.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        raise KeyboardInterrupt


try:
    with sigint_after_block():
        import argparse
        import os

        import torch

        from mmapt.apis.tool_args import (add_num_images_argument,
                                          add_thresholds_argument)
        from mmapt.benchmark.arch_bench import run_gpu_benchmark
        from mmapt.engine.precision import add_device_dtype_arguments
        from mmapt.engine.preflight import InputError, check_writable_file
except KeyboardInterrupt:
    sys.exit('gpu_benchmark.py: stopped (SIGINT) while loading its '
             'modules; nothing was run')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--images',
        help='folder of images (.jpg/.png/.npy); '
        'default: the scikit-image sample photographs')
    parser.add_argument(
        '--out',
        required=True,
        help='JSON file to write (a folder: FOLDER/gpu_benchmark.json); '
        'the Markdown summary goes next to it')
    add_device_dtype_arguments(parser, device='cuda', dtype='bf16')
    parser.add_argument(
        '--archs',
        nargs='+',
        default=['base', 'large'],
        choices=['base', 'large'])
    parser.add_argument(
        '--train-archs',
        nargs='*',
        default=['base'],
        choices=['base', 'large'],
        help='architectures whose forward + backward is timed too')
    parser.add_argument('--canvas', type=int, default=1536)
    add_thresholds_argument(parser)
    parser.add_argument(
        '--bucket',
        type=int,
        default=1024,
        help='static mode: packed lengths rounded up to a multiple of this '
        '(at most the square canvas\'s count)')
    parser.add_argument(
        '--repeat',
        type=int,
        default=10,
        help='timed forwards per image and arm')
    parser.add_argument(
        '--warmup',
        type=int,
        default=2,
        help='untimed forwards per image and arm (>= 1: a graph arm '
        'captures on its first)')
    parser.add_argument(
        '--train-repeat',
        type=int,
        default=3,
        help='timed forward + backward per image and training arm')
    add_num_images_argument(parser)
    parser.add_argument(
        '--no-compile',
        action='store_true',
        help='skip the torch.compile arm of the plain model')
    parser.add_argument(
        '--budget-s',
        type=float,
        default=400.,
        help='once the run has taken this long, the arms after apt_square, '
        'the profile and training stop (checked between the calls of every '
        'warm-up, compile, capture, repeat and training step; what it ends '
        'is listed under "cut")')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny 4-block model on a 256 canvas, 2 repeats '
        '(a smoke test of the script, e.g. on CPU)')
    args = parser.parse_args(argv)
    if args.quick:
        args.archs = ['quick']
        args.train_archs = ['quick'] if args.train_archs else []
        args.canvas = 256
        args.bucket = min(args.bucket, 64)
        args.repeat = min(args.repeat, 2)
        args.warmup = min(args.warmup, 1)
        args.train_repeat = min(args.train_repeat, 1)
    if min(args.repeat, args.train_repeat, args.warmup) < 1:
        parser.error('--repeat, --train-repeat and --warmup must be >= 1')
    if len(args.thresholds) != 3:
        parser.error('--thresholds takes 3 values (patch sizes 16/32/64/128)')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU visible to torch '
                     f'{torch.__version__}; use --device cpu --quick for a '
                     'smoke test')
    if os.path.isdir(args.out) or args.out.endswith(os.sep):
        args.out = os.path.join(args.out, 'gpu_benchmark.json')
    try:
        check_writable_file(args.out, '--out')
    except InputError as err:
        parser.error(str(err))
    return args


def main(argv=None) -> None:
    run_gpu_benchmark(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
