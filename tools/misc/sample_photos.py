"""Copy the real photographs that scikit-image ships into one folder.

No data set can be downloaded here; these are the real photographs the
analysis tools (patch maps, token counts, benchmarks) are measured on::

    python tools/misc/sample_photos.py data/photos
"""
import argparse
import os
import shutil

# Photographs only (no synthetic or microscopy images), RGB and gray.
PHOTOS = ('astronaut.png', 'camera.png', 'chelsea.png', 'coffee.png',
          'rocket.jpg', 'motorcycle_left.png', 'hubble_deep_field.jpg',
          'moon.png')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    args = parser.parse_args()
    import skimage
    source = os.path.join(os.path.dirname(skimage.__file__), 'data')
    os.makedirs(args.out_dir, exist_ok=True)
    for name in PHOTOS:
        shutil.copy(os.path.join(source, name), args.out_dir)
    print(f'copied {len(PHOTOS)} photographs to {args.out_dir}')


if __name__ == '__main__':
    main()
