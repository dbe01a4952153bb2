"""Run images through an ONNX export (tools/deployment/export_onnx.py) in
ONNX Runtime: prints each image's bucket, token count and output shapes;
``--save`` writes the outputs to a .npz per image.

    python tools/deployment/onnx_infer.py work_dirs/onnx demo/demo.jpg \
        --config configs/apt_vitdet_coco.py --save work_dirs/onnx_out
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np

from mmapt.deploy.runtime import (ONNXRuntimeModel, available_providers,
                                  prepare_image)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('export', help='export folder (with deploy.json)')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument(
        '--config', help='check that the export came from this config')
    parser.add_argument(
        '--providers',
        nargs='+',
        default=['CPUExecutionProvider'],
        help='ONNX Runtime execution providers (default: CPU; CUDA / '
        'TensorRT need onnxruntime-gpu)')
    parser.add_argument(
        '--threads', type=int, help='intra_op_num_threads of the sessions')
    parser.add_argument(
        '--on-overflow',
        choices=('cap', 'error'),
        default='cap',
        help='an image no bucket holds: cap it to the largest bucket as '
        'static mode does (default), or stop with an error')
    parser.add_argument('--save', help='folder for one .npz per image')
    parser.add_argument(
        '--list-providers',
        action='store_true',
        help='print the available providers and exit')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_providers:
        print(json.dumps(available_providers()))
        return 0
    from mmapt.apis.images import load_rgb
    try:
        model = ONNXRuntimeModel(
            args.export,
            providers=args.providers,
            config=args.config,
            intra_op_num_threads=args.threads,
            on_overflow=args.on_overflow)
        if args.save:
            os.makedirs(args.save, exist_ok=True)
        for path in args.images:
            result = model(prepare_image(load_rgb(path), model.manifest))
            print(
                json.dumps(
                    dict(
                        image=path,
                        bucket=result.pack_size,
                        packed_tokens=result.packed_tokens,
                        capped=result.capped,
                        outputs={
                            k: list(v.shape)
                            for k, v in result.outputs.items()
                        })))
            if args.save:
                name = osp.splitext(osp.basename(path))[0]
                np.savez(osp.join(args.save, f'{name}.npz'), **result.outputs)
    except (ValueError, ImportError, FileNotFoundError) as err:
        sys.exit(f'onnx_infer: {err}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
