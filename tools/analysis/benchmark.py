"""Speed of APT against its plain baseline: whole models, backbones, AMP.

One command line, three modes:

* default: whole detectors / segmentors from a config pair, every image
  through each config's test pipeline, data preprocessor and predict
  forward (:mod:`mmapt.benchmark.pipeline`); ``--train``: training
  iterations instead::

    python tools/analysis/benchmark.py configs/apt_vitdet_coco.py \\
        --compare configs/eva02_vitdet_coco.py --images data/photos \\
        --num-images 5 --repeat 1 --device cpu --baseline-pad window --json

* ``--backbone-only``: the backbones alone (EVA-02 or ``--backbone vit``),
  same random weights, with APT's stages, the static-shape arm
  (``--bucket``), accelerated arms and op / sync counts
  (:mod:`mmapt.benchmark.backbone_bench`)::

    python tools/analysis/benchmark.py --backbone-only data/photos \\
        --arch small --canvas 1536 --repeat 2 --json

* ``--check-amp``: plain and APT backbones in fp32 / fp16 / bf16: finite,
  error against fp32, attention kernel, time, memory
  (:mod:`mmapt.benchmark.amp_check`; exit status 1 on a failure)::

    python tools/analysis/benchmark.py --check-amp --device cuda \\
        --arch base --canvas 1024

``benchmark_backbone.py`` and ``check_amp.py`` are aliases of the last two.
``python tools/analysis/benchmark.py --backbone-only --help`` (or
``--check-amp --help``) lists a mode's options. Arms run interleaved in
one process (every repeat runs every image through every arm, the first
arm rotating); ``--json`` prints one JSON object as the last line.
"""
import argparse
import sys
from types import ModuleType
from typing import List, Optional

from mmapt.benchmark import amp_check, backbone_bench, pipeline

#: Mode flag -> the library module that runs it; none: ``pipeline``.
MODES = {'--backbone-only': backbone_bench, '--check-amp': amp_check}


def split_mode(argv: List[str]) -> ModuleType:
    """The mode ``argv`` asks for; its flag is taken out of ``argv``."""
    for flag, mode in MODES.items():
        if flag in argv:
            argv.remove(flag)
            return mode
    return pipeline


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The arguments of the mode ``argv`` asks for (``args.mode``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = split_mode(argv)
    parser = argparse.ArgumentParser(
        description=mode.__doc__.split('\n\n')[0].replace('\n', ' '),
        epilog=None if mode is not pipeline else
        'other modes: --backbone-only (the backbones alone), --check-amp '
        '(mixed precision); add --help after one for its options')
    mode.add_arguments(parser)
    args = parser.parse_args(argv)
    check = getattr(mode, 'check_args', None)
    if check is not None:
        check(parser, args)
    args.mode, args.argv = mode, argv
    return args


def main(argv: Optional[List[str]] = None) -> Optional[int]:
    args = parse_args(argv)
    return args.mode.run(args)


if __name__ == '__main__':
    sys.exit(main())
