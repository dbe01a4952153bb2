# Copyright (c) mmapt contributors. All rights reserved.
"""Bounded check of the CUDA route of ``scripts/setup.sh``: compile and link
ONE mmcv CUDA op (NMS) against the installed torch, with the flags the
set-up script gives the full mmcv build (``-std=c++20`` for nvcc and the host
compiler), and, when a GPU is visible, run it against torchvision's NMS.

A full CUDA build of mmcv compiles about 60 ``.cu`` files; this one takes a
minute or two and shows whether the compiler, the CUDA headers and torch fit
together before the long build starts.

    python scripts/cuda_op_check.py MMCV_SRC_DIR [--build-dir DIR]

MMCV_SRC_DIR is an unpacked mmcv 2.1.0 sdist. nvcc is taken from
``CUDA_HOME`` (see docs/install.md).
"""
import argparse
import os
import os.path as osp
import tempfile
import time

BINDING = r'''
#include <torch/extension.h>
at::Tensor NMSCUDAKernelLauncher(at::Tensor boxes, at::Tensor scores,
                                 float iou_threshold, int offset);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nms", &NMSCUDAKernelLauncher, "mmcv NMS, CUDA kernel");
}
'''


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('mmcv_src', help='unpacked mmcv 2.1.0 sdist')
    parser.add_argument('--build-dir', help='default: a temporary directory')
    return parser.parse_args()


def main():
    args = parse_args()
    import torch
    from torch.utils import cpp_extension

    csrc = osp.join(args.mmcv_src, 'mmcv', 'ops', 'csrc')
    kernel = osp.join(csrc, 'pytorch', 'cuda', 'nms_cuda.cu')
    if not osp.isfile(kernel):
        raise SystemExit(f'{kernel} not found: pass the folder of an '
                         'unpacked mmcv 2.1.0 sdist')
    if cpp_extension.CUDA_HOME is None:
        raise SystemExit('no CUDA compiler: set CUDA_HOME to a CUDA toolkit '
                         'whose bin/nvcc matches torch.version.cuda '
                         f'({torch.version.cuda})')
    build_dir = args.build_dir or tempfile.mkdtemp(prefix='mmapt_cuda_op_')
    os.makedirs(build_dir, exist_ok=True)
    binding = osp.join(build_dir, 'binding.cpp')
    with open(binding, 'w') as f:
        f.write(BINDING)
    print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), '
          f'CUDA_HOME {cpp_extension.CUDA_HOME}, build dir {build_dir}')
    start = time.perf_counter()
    ext = cpp_extension.load(
        name='mmapt_nms_check',
        sources=[binding, kernel],
        extra_include_paths=[
            osp.join(csrc, 'common'),
            osp.join(csrc, 'common', 'cuda'),
            osp.join(csrc, 'pytorch')
        ],
        extra_cflags=['-std=c++20', '-DMMCV_WITH_CUDA'],
        extra_cuda_cflags=['-std=c++20', '-DMMCV_WITH_CUDA'],
        build_directory=build_dir,
        verbose=True)
    print(f'compiled, linked and imported in '
          f'{time.perf_counter() - start:.0f} s: {ext.__file__}')
    if not torch.cuda.is_available():
        print('no GPU visible: the kernel was not run')
        return
    import torchvision
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=gen) * 400
    wh = torch.rand(500, 2, generator=gen) * 80 + 1
    boxes = torch.cat([xy, xy + wh], 1).cuda()
    scores = torch.rand(500, generator=gen).cuda()
    keep = ext.nms(boxes, scores, 0.5, 0)
    ref = torchvision.ops.nms(boxes.cpu(), scores.cpu(), 0.5)
    if not torch.equal(keep.cpu().sort()[0], ref.sort()[0]):
        raise SystemExit('mmcv CUDA NMS differs from torchvision NMS')
    print(f'mmcv CUDA NMS on {torch.cuda.get_device_name()} equals '
          f'torchvision NMS ({len(ref)} of 500 boxes kept)')


if __name__ == '__main__':
    main()
