# Copyright (c) mmapt contributors. All rights reserved.
"""Check an mmapt installation on this machine.

1. versions of torch, mmcv, mmengine, mmdet, timm and mmapt, and whether
   mmcv's ops were compiled with CUDA;
2. with a GPU: mmcv's NMS and RoIAlign (the ops mmdet's detectors run) on GPU
   tensors give the CPU results (a CPU-only mmcv on a GPU host fails here,
   with the fix);
3. one forward of the toy APT detector (Cascade Mask R-CNN, random weights)
   on the GPU, or on the CPU without one.

    python tools/misc/check_install.py [--device cpu|cuda] [--config CONFIG]
"""
import argparse
import importlib.util
import os.path as osp
import sys
import time

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py')


def parse_args():
    parser = argparse.ArgumentParser(description='Check an mmapt install')
    parser.add_argument(
        '--device',
        choices=('cpu', 'cuda'),
        help='default: cuda when torch sees a GPU, else cpu')
    parser.add_argument(
        '--config',
        default=DEFAULT_CONFIG,
        help='detector config to run once (random weights)')
    return parser.parse_args()


def mmcv_has_cuda_ops() -> bool:
    """Whether mmcv's compiled extension holds the CUDA kernels, read from
    the binary: mmcv's ``get_compiling_cuda_version()`` crashed (segfault)
    in a CUDA build against torch 2.11 (docs/install.md)."""
    spec = importlib.util.find_spec('mmcv._ext')
    if spec is None:
        raise SystemExit('mmcv has no compiled ops (mmcv-lite?): install '
                         'mmcv 2.1.0 with ops, e.g. with make setup')
    with open(spec.origin, 'rb') as f:
        return b'NMSCUDAKernelLauncher' in f.read()


def report_versions() -> bool:
    import mmcv
    import mmdet
    import mmengine
    import timm

    import mmapt
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), '
          f'GPU: {gpu or "none"}')
    cuda_ops = mmcv_has_cuda_ops()
    print(f'mmcv {mmcv.__version__} ({"CUDA and CPU" if cuda_ops else "CPU"}'
          f' ops), mmengine {mmengine.__version__}, mmdet '
          f'{mmdet.__version__}, timm {timm.__version__}, mmapt '
          f'{mmapt.__version__}')
    return cuda_ops


def check_cuda_ops(mmcv_cuda_ops: bool) -> None:
    """NMS and RoIAlign on GPU tensors against the CPU kernels."""
    from mmcv.ops import RoIAlign, nms
    if not mmcv_cuda_ops:
        raise SystemExit(
            'mmcv was built without its CUDA ops, so mmdet cannot run on '
            'this GPU. Rebuild it: rm -rf .venv && make setup (on this GPU '
            'host it builds the CUDA ops; docs/install.md)')
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=gen) * 200
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=gen) * 60 + 1], 1)
    scores = torch.rand(300, generator=gen)
    _, keep_cpu = nms(boxes, scores, 0.5)
    _, keep_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)
    if not torch.equal(keep_cpu, keep_gpu.cpu()):
        raise SystemExit('mmcv NMS: GPU and CPU results differ')
    feats = torch.rand(2, 8, 32, 32, generator=gen)
    rois = torch.tensor([[0, 1., 1., 20., 25.], [1, 4., 0., 31., 9.]])
    roi_align = RoIAlign((7, 7), 0.5, sampling_ratio=2, aligned=True)
    out_cpu = roi_align(feats, rois)
    out_gpu = roi_align(feats.cuda(), rois.cuda()).cpu()
    if not torch.allclose(out_cpu, out_gpu, atol=1e-5):
        raise SystemExit('mmcv RoIAlign: GPU and CPU results differ')
    print(f'mmcv CUDA ops: NMS ({len(keep_cpu)} of 300 kept) and RoIAlign on '
          'GPU tensors equal the CPU results')


def run_detector(config: str, device: str) -> None:
    from mmdet.apis import inference_detector, init_detector
    model = init_detector(config, None, device=device)
    rng = np.random.default_rng(0)
    # Flat regions and noise: APT merges the first, keeps the second small.
    image = np.full((256, 320, 3), 120, np.uint8)
    image[64:192, 96:256] = rng.integers(0, 255, (128, 160, 3), np.uint8)
    start = time.perf_counter()
    result = inference_detector(model, image)
    if device == 'cuda':
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f'{osp.basename(config)} on {device}: {len(result.pred_instances)} '
          f'detections (random weights) in {seconds:.2f} s')


def main():
    args = parse_args()
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: torch sees no GPU '
                         f'(torch {torch.__version__}, CUDA '
                         f'{torch.version.cuda})')
    mmcv_cuda_ops = report_versions()
    if device == 'cuda':
        check_cuda_ops(mmcv_cuda_ops)
    run_detector(args.config, device)
    print('installation OK')
    return 0


if __name__ == '__main__':
    sys.exit(main())
