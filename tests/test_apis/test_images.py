"""The tools decode images as the model's data pipeline does: an EXIF-rotated
phone JPEG, a 16-bit gray PNG, RGBA and CMYK files give the tools exactly
the array mmcv's ``LoadImageFromFile`` gives the model (BGR -> RGB, as the
data preprocessor turns it)."""
import os.path as osp

import cv2
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from mmapt.apis import (ImageDecodeError, ImageReadError, decode_image,
                        load_rgb, pipeline_decode_backend, read_image)

ORIENTATION = 0x0112


def pipeline_rgb(path: str, backend: str = 'cv2') -> np.ndarray:
    """What the model gets: the configs' loading step, then BGR -> RGB."""
    from mmcv.transforms import LoadImageFromFile
    results = LoadImageFromFile(imdecode_backend=backend)(
        dict(img_path=str(path)))
    return results['img'][..., ::-1]


@pytest.fixture(scope='module')
def odd_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('odd')
    rng = np.random.default_rng(0)
    # A 'phone' JPEG: stored 96 x 160 (landscape), Orientation 6 = rotate
    # 90 degrees clockwise to display, so the model sees 160 x 96.
    stored = np.zeros((96, 160, 3), np.uint8)
    stored[:, :40] = (250, 20, 20)  # a red band on the stored left
    stored[:, 40:] = rng.integers(0, 255, (96, 120, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(stored).save(
        folder / 'phone.jpg', exif=exif.tobytes(), quality=95)
    # 16-bit gray: values up to 60000, which Pillow's RGB conversion clips.
    gray16 = np.tile(np.linspace(0, 60000, 192, dtype=np.uint16), (128, 1))
    gray16[32:96, 64:128] = rng.integers(0, 60000, (64, 64), dtype=np.uint16)
    cv2.imwrite(str(folder / 'gray16.png'), gray16)
    rgba = np.dstack([
        rng.integers(0, 255, (64, 96, 3), dtype=np.uint8),
        np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))
    ])
    Image.fromarray(rgba, 'RGBA').save(folder / 'alpha.png')
    Image.fromarray(rng.integers(0, 255, (64, 96, 3),
                                 dtype=np.uint8)).convert('CMYK').save(
                                     folder / 'cmyk.jpg', quality=95)
    return folder


@pytest.mark.parametrize('name',
                         ['phone.jpg', 'gray16.png', 'alpha.png', 'cmyk.jpg'])
def test_tools_see_the_pipelines_pixels(odd_files, name):
    path = str(odd_files / name)
    expected = pipeline_rgb(path)
    for array in (decode_image(path), load_rgb(path), read_image(path)):
        assert array.dtype == np.uint8 and array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)


def test_exif_orientation_is_applied(odd_files):
    image = load_rgb(str(odd_files / 'phone.jpg'))
    assert image.shape == (160, 96, 3)  # displayed upright
    # The stored left band is now the top band.
    top = image[:30].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[1] < 60 and top[2] < 60


def test_sixteen_bit_gray_is_scaled_not_clipped(odd_files):
    path = str(odd_files / 'gray16.png')
    image = load_rgb(path)
    # Pillow's convert('RGB') (the former decoding) clips to white.
    with Image.open(path) as pil:
        clipped = np.asarray(pil.convert('RGB'))
    assert (clipped == 255).mean() > 0.9
    assert (image == 255).mean() < 0.05
    source = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(image[..., 0], source / 256, atol=1)


def test_the_tokens_follow_the_pipelines_pixels(odd_files):
    """The calibrating tools count the tokens of the image the model sees:
    the 16-bit image's texture keeps its base patches."""
    from mmapt.apis.views import normalise, prepare_view
    from mmapt.tokenizer import PatchTokenizer
    tokenizer = PatchTokenizer(16, (1.0, 1.0), patch_sizes=(16, 32, 64))
    path = str(odd_files / 'gray16.png')
    layouts = [
        tokenizer(normalise([prepare_view(image, canvas=192)]))
        for image in (load_rgb(path), pipeline_rgb(path))
    ]
    assert layouts[0].num_tokens == layouts[1].num_tokens
    assert bool((layouts[0].scale_index == layouts[1].scale_index).all())
    assert int((layouts[0].scale_index == 0).sum()) >= 16  # texture kept


def test_pillow_backend_matches_a_pillow_pipeline(odd_files):
    for name in ('phone.jpg', 'alpha.png', 'cmyk.jpg'):
        path = str(odd_files / name)
        np.testing.assert_array_equal(
            decode_image(path, 'pillow'), pipeline_rgb(path, 'pillow'))
    bgr = decode_image(str(odd_files / 'phone.jpg'), 'pillow', 'bgr')
    assert bgr.flags['C_CONTIGUOUS']


def test_pipeline_decode_backend_of_the_configs():
    from mmengine.config import Config
    coco = Config.fromfile(osp.join(ROOT, 'configs', 'apt_vitdet_coco.py'))
    assert pipeline_decode_backend(coco) == 'pillow'  # detectron2's reader
    assert pipeline_decode_backend(coco, 'train') == 'cv2'
    toy = Config.fromfile(osp.join(ROOT, 'configs', 'toy', 'toy_apt_det.py'))
    assert pipeline_decode_backend(toy) == 'cv2'


def test_a_directory_is_reported_as_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match='is a directory'):
        decode_image(str(tmp_path))
    with pytest.raises(ImageReadError, match='is a directory, not an image'):
        read_image(str(tmp_path))
    with pytest.raises(ImageDecodeError, match='not an image file'):
        (tmp_path / 'x.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 64)
        decode_image(str(tmp_path / 'x.png'))
