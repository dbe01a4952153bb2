"""Copy the real photographs that scikit-image ships into one folder.

No data set can be downloaded here; these are the real photographs the
analysis tools (patch maps, token counts, benchmarks) are measured on::

    python tools/misc/sample_photos.py data/photos

``--npy`` also writes each as an (H, W, 3) uint8 ``.npy`` array, readable
where neither scikit-image nor an image decoder is installed.
"""
import argparse
import os
import shutil

import numpy as np

from mmapt.apis.images import load_rgb, sample_photo_paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument(
        '--npy',
        action='store_true',
        help='write .npy arrays instead of the image files')
    args = parser.parse_args()
    paths = sample_photo_paths()
    os.makedirs(args.out_dir, exist_ok=True)
    for path in paths:
        if args.npy:
            name = os.path.splitext(os.path.basename(path))[0] + '.npy'
            np.save(os.path.join(args.out_dir, name), load_rgb(path))
        else:
            shutil.copy(path, args.out_dir)
    print(f'copied {len(paths)} photographs to {args.out_dir}')


if __name__ == '__main__':
    main()
