"""Time ONNX Runtime exports: APT vs plain (same exporter and session
options), and each vs eager PyTorch, interleaved per photograph.

    python tools/deployment/benchmark_onnx.py APT_CONFIG PLAIN_CONFIG \
        --apt-export DIR --plain-export DIR --threads 2 --repeat 2
"""
import argparse
import json
import sys

from mmengine.config import Config

from mmapt.deploy import build_model
from mmapt.deploy.benchmark import benchmark_onnx


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('apt_config')
    parser.add_argument('plain_config')
    parser.add_argument('--apt-export', required=True)
    parser.add_argument('--plain-export', required=True)
    parser.add_argument(
        '--images',
        help='image file or folder (default: the sample photographs)')
    parser.add_argument('--num-images', type=int, default=3)
    parser.add_argument('--threads', type=int, required=True)
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument(
        '--no-torch', action='store_true', help='skip the PyTorch arms')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmapt.apis.images import list_images, load_rgb, sample_photo_paths
    paths = list_images(args.images) if args.images else sample_photo_paths()
    images = [load_rgb(p) for p in paths[:args.num_images]]
    models = {}
    if not args.no_torch:
        # random weights: speed depends on the token count, not the weights
        models = dict(
            apt_model=build_model(Config.fromfile(args.apt_config)),
            plain_model=build_model(Config.fromfile(args.plain_config)))
    try:
        report = benchmark_onnx(args.apt_export, args.plain_export, images,
                                args.threads, args.repeat, **models)
    except (ValueError, ImportError, FileNotFoundError) as err:
        sys.exit(f'benchmark_onnx: {err}')
    for path, row in zip(paths, report['images']):
        row['image'] = path.split('/')[-1]
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
