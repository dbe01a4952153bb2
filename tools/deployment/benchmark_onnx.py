"""Time ONNX Runtime exports: APT vs plain (same exporter and session
options), and each vs eager PyTorch, interleaved per photograph.

    python tools/deployment/benchmark_onnx.py APT_CONFIG PLAIN_CONFIG \
        --apt-export DIR [--apt-export LABEL=DIR ...] --plain-export DIR \
        --threads 1 --repeat 2

The first ``--apt-export`` is the one the eager APT arm runs; more (other
bucket sets, a budget-mode export) run as further arms, named by LABEL.
"""
import argparse
import json
import sys

from mmengine.config import Config, DictAction

from mmapt.deploy import build_model
from mmapt.deploy.benchmark import benchmark_onnx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('apt_config')
    parser.add_argument('plain_config')
    parser.add_argument(
        '--apt-export',
        action='append',
        required=True,
        help='APT export folder, or LABEL=DIR; repeat for more arms')
    parser.add_argument('--plain-export', required=True)
    parser.add_argument(
        '--images',
        help='image file or folder (default: the sample photographs)')
    parser.add_argument(
        '--num-images',
        type=int,
        help='the first N images only (default: all)')
    parser.add_argument('--threads', type=int, required=True)
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument(
        '--session-options',
        nargs='+',
        action=DictAction,
        help='onnxruntime SessionOptions for every ORT arm, key=value '
        '(default: enable_cpu_mem_arena=False)')
    parser.add_argument(
        '--no-torch', action='store_true', help='skip the PyTorch arms')
    return parser.parse_args(argv)


def export_arms(specs):
    """``{label: folder}`` of the ``--apt-export`` values (label ``apt``
    for the first without one, ``apt2``... after)."""
    arms = {}
    for i, spec in enumerate(specs):
        label, sep, folder = spec.partition('=')
        if not sep:
            label, folder = ('apt' if i == 0 else f'apt{i + 1}'), spec
        if not label.isidentifier() or label == 'plain':
            sys.exit(f'benchmark_onnx: --apt-export label {label!r} must be '
                     'a word (letters, digits, _) other than "plain"')
        if label in arms:
            sys.exit(f'benchmark_onnx: --apt-export label {label!r} given '
                     'twice: name each export LABEL=DIR')
        arms[label] = folder
    return arms


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmapt.apis.images import list_images, load_rgb, sample_photo_paths
    paths = list_images(args.images) if args.images else sample_photo_paths()
    paths = paths[:args.num_images]
    images = [load_rgb(p) for p in paths]
    models = {}
    if not args.no_torch:
        # random weights: speed depends on the token count, not the weights
        models = dict(
            apt_model=build_model(Config.fromfile(args.apt_config)),
            plain_model=build_model(Config.fromfile(args.plain_config)))
    try:
        report = benchmark_onnx(
            export_arms(args.apt_export),
            args.plain_export,
            images,
            args.threads,
            args.repeat,
            session_options=args.session_options,
            on_row=lambda row: print(
                json.dumps(row), file=sys.stderr, flush=True),
            **models)
    except (ValueError, ImportError, FileNotFoundError) as err:
        sys.exit(f'benchmark_onnx: {err}')
    for path, row in zip(paths, report['images']):
        row['image'] = path.split('/')[-1]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
