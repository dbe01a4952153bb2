"""Entropy layouts are pinned: stored reference layouts, reproduced exactly.

``tests/fixtures/entropy_layouts.json`` holds, for synthetic images and the
scikit-image photographs under several tokenizer settings (thresholds,
windows, prefix tokens), the per-scale keep masks (bits) and a digest of
every field of the packed layout, written by the tokenizer as it was before
the scorer registry and the one-pass entropy existed. Any change to the
entropy, the quadtree or the packing that moves one token fails here, and the
message names the image, the setting and the field.

Regenerate only on purpose (a deliberate change of the layout), with::

    python tests/test_tokenizer/test_entropy_layouts.py --write
"""
import base64
import hashlib
import json
import os
import sys

import numpy as np
import pytest
from conftest import TESTS_DIR

FIXTURE = os.path.join(TESTS_DIR, 'fixtures', 'entropy_layouts.json')

#: Tokenizer settings: the paper's detection, segmentation and
#: classification-style thresholds, a looser detection setting, with and
#: without windows and prefix tokens, and DINOv2's 14-px patches.
SETTINGS = {
    'det':
    dict(patch_size=16, thresholds=(2.0, 2.0, 0.3)),
    'det_win16_prefix1':
    dict(
        patch_size=16,
        thresholds=(2.0, 2.0, 0.3),
        window_size=16,
        num_prefix_tokens=1),
    'loose':
    dict(patch_size=16, thresholds=(1.0, 1.0, 0.3)),
    'loose_win8_prefix1':
    dict(
        patch_size=16,
        thresholds=(1.0, 1.0, 0.3),
        window_size=8,
        num_prefix_tokens=1),
    'seg':
    dict(patch_size=16, thresholds=(5.75, )),
    'seg_win8_prefix5':
    dict(
        patch_size=16, thresholds=(5.75, ), window_size=8,
        num_prefix_tokens=5),
    'cls':
    dict(patch_size=16, thresholds=(5.5, 4.0)),
    'dinov2_prefix5':
    dict(patch_size=14, thresholds=(5.75, ), num_prefix_tokens=5),
}

#: Packed-layout fields compared through a digest (as int64 values).
LAYOUT_FIELDS = ('image_index', 'scale_index', 'row', 'col', 'side',
                 'window_index', 'cu_seqlens_image', 'cu_seqlens_window',
                 'cell_to_token', 'tokens_per_image', 'content_index',
                 'prefix_index', 'packed_image_index', 'max_seqlen')

#: Photographs, cropped (never resampled) to at most this side.
PHOTO_SIDE = 512


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    """Uniform-looking uint8 RGB noise from integer hashing (no RNG whose
    stream could change between library versions)."""
    index = np.arange(
        height * width * 3, dtype=np.uint64) + np.uint64(seed * 7919)
    modulus = np.uint64(1 << 32)
    mixed = (index * np.uint64(2654435761) + np.uint64(12345)) % modulus
    mixed = (mixed ^ (mixed >> np.uint64(13))) * np.uint64(1274126177) \
        % modulus
    return (mixed >> np.uint64(24)).astype(np.uint8).reshape(height, width, 3)


def synthetic_images() -> dict:
    """Constant, noise, half/half, ramp and block images (uint8 RGB)."""
    constant = np.full((256, 256, 3), 80, np.uint8)
    black = np.zeros((256, 384, 3), np.uint8)
    noise = _noise(256, 384, 1)
    half = np.full((256, 256, 3), 30, np.uint8)
    half[:, 128:] = _noise(256, 128, 2)
    ramp = np.broadcast_to(
        np.linspace(0, 255, 256).astype(np.uint8)[None, :, None],
        (256, 256, 3)).copy()
    blocks = np.kron((np.indices((4, 4)).sum(0) % 2) * 150 + 50,
                     np.ones((64, 64))).astype(np.uint8)
    blocks = np.repeat(blocks[..., None], 3, axis=2)
    blocks[100:140, 30:220] = _noise(40, 190, 3) // 4 + 100  # low contrast
    return {
        'constant': constant,
        'black': black,
        'noise': noise,
        'half': half,
        'ramp': ramp,
        'blocks': blocks
    }


def photo_images(paths=None) -> dict:
    """The scikit-image photographs, centre-cropped to <= PHOTO_SIDE."""
    from mmapt.apis.images import load_rgb, sample_photo_paths
    images = {}
    for path in paths or sample_photo_paths():
        image = load_rgb(path)
        height, width = image.shape[:2]
        top = max(0, (height - PHOTO_SIDE) // 2)
        left = max(0, (width - PHOTO_SIDE) // 2)
        name = os.path.splitext(os.path.basename(path))[0]
        images[name] = np.ascontiguousarray(image[top:top + PHOTO_SIDE,
                                                  left:left + PHOTO_SIDE])
    return images


def _sha(array: np.ndarray, length: int = 16) -> str:
    return hashlib.sha256(
        np.ascontiguousarray(array).tobytes()).hexdigest()[:length]


def layout_record(layout) -> dict:
    """Keep masks are derived from the layout itself (scale of each token
    at its top-left cell), so the record pins the layout, not a path."""
    record = {}
    for field in LAYOUT_FIELDS:
        if field == 'max_seqlen':
            value = np.array(
                [layout.max_seqlen_image, layout.max_seqlen_window], np.int64)
        else:
            value = getattr(layout, field).detach().cpu().long().numpy()
        record[field] = _sha(value)
    return record


def keep_masks(layout) -> list:
    """Per scale, (B, Hc >> s, Wc >> s) bool: a token of that scale has its
    top-left cell there."""
    height, width = layout.grid_size
    masks = []
    for scale in range(layout.num_scales):
        mask = np.zeros((layout.batch_size, height >> scale, width >> scale),
                        bool)
        sel = (layout.scale_index == scale).cpu().numpy()
        mask[layout.image_index.cpu().numpy()[sel],
             layout.row.cpu().numpy()[sel] >> scale,
             layout.col.cpu().numpy()[sel] >> scale] = True
        masks.append(mask)
    return masks


def pack_masks(masks: list) -> list:
    return [
        dict(
            shape=list(m.shape),
            bits=base64.b64encode(np.packbits(m.reshape(-1))).decode())
        for m in masks
    ]


def unpack_masks(packed: list) -> list:
    out = []
    for entry in packed:
        count = int(np.prod(entry['shape']))
        bits = np.unpackbits(
            np.frombuffer(base64.b64decode(entry['bits']), np.uint8))
        out.append(bits[:count].astype(bool).reshape(entry['shape']))
    return out


def make_tokenizer(setting: dict):
    from mmapt.tokenizer import PatchTokenizer
    return PatchTokenizer(**setting)


def view(image: np.ndarray, setting: dict) -> np.ndarray:
    from mmapt.apis.views import prepare_view
    multiple = setting['patch_size'] * 2**len(setting['thresholds'])
    return prepare_view(image, multiple=multiple)


def compute_case(name: str, images: list, setting_name: str, tokenize):
    """One fixture entry: ``tokenize(tokenizer, batch) -> PatchLayout``."""
    from mmapt.apis.views import normalise
    setting = SETTINGS[setting_name]
    views = [view(image, setting) for image in images]
    layout = tokenize(make_tokenizer(setting), normalise(views))
    return dict(
        image=name,
        setting=setting_name,
        input_sha=_sha(np.stack(views)),
        tokens=layout.tokens_per_image.tolist(),
        masks=pack_masks(keep_masks(layout)),
        layout=layout_record(layout))


def all_cases(photos: dict, tokenize) -> list:
    cases = []
    synthetic = synthetic_images()
    for group, images in (('synthetic', synthetic), ('photo', photos)):
        for name, image in images.items():
            for setting_name in SETTINGS:
                case = compute_case(name, [image], setting_name, tokenize)
                case['group'] = group
                cases.append(case)
    # One batch of same-size images: packing across images.
    same = [n for n, im in synthetic.items() if im.shape[:2] == (256, 256)]
    for setting_name in ('det_win16_prefix1', 'seg_win8_prefix5'):
        case = compute_case('+'.join(same), [synthetic[n] for n in same],
                            setting_name, tokenize)
        case['group'] = 'batch'
        cases.append(case)
    return cases


def _default_tokenize(tokenizer, batch):
    return tokenizer(batch)


# ---------------------------------------------------------------- the tests
@pytest.fixture(scope='module')
def reference():
    with open(FIXTURE) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def photos():
    pytest.importorskip('skimage')
    return photo_images()


def _compare(stored: dict, computed: dict) -> None:
    where = f'{stored["image"]} / {stored["setting"]}'
    assert computed['input_sha'] == stored['input_sha'], (
        f'{where}: the input image differs from the fixture\'s')
    assert computed['tokens'] == stored['tokens'], (
        f'{where}: tokens per image {computed["tokens"]} != stored '
        f'{stored["tokens"]}')
    for scale, (got, want) in enumerate(
            zip(
                unpack_masks(computed['masks']),
                unpack_masks(stored['masks']))):
        assert got.shape == want.shape, f'{where}: scale {scale} shape'
        differ = int((got != want).sum())
        assert differ == 0, (
            f'{where}: {differ} patches of scale {scale} differ from the '
            f'stored layout')
    for field, digest in stored['layout'].items():
        assert computed['layout'][field] == digest, (
            f'{where}: layout field {field} differs from the stored layout')


def _check_group(reference, images: dict, group: str, tokenize) -> int:
    checked = 0
    for stored in reference['cases']:
        if stored['group'] != group:
            continue
        computed = compute_case(stored['image'], [images[stored['image']]],
                                stored['setting'], tokenize)
        _compare(stored, computed)
        checked += 1
    return checked


def test_fixture_is_small_and_complete(reference):
    assert os.path.getsize(FIXTURE) < 200_000
    groups = {c['group'] for c in reference['cases']}
    assert groups == {'synthetic', 'photo', 'batch'}
    assert {c['setting'] for c in reference['cases']} == set(SETTINGS)
    # The fixture pins layouts that actually merge something and some that
    # do not: not a trivial all-base or all-merged set.
    ratios = [
        sum(c['tokens']) / np.prod(c['masks'][0]['shape'])
        for c in reference['cases']
    ]
    assert min(ratios) < 0.1 and max(ratios) == 1.0
    assert sum(0.2 < r < 0.95 for r in ratios) >= 20


def test_synthetic_layouts_unchanged(reference):
    assert _check_group(reference, synthetic_images(), 'synthetic',
                        _default_tokenize) == 6 * len(SETTINGS)


def test_batched_layouts_unchanged(reference):
    synthetic = synthetic_images()
    for stored in reference['cases']:
        if stored['group'] != 'batch':
            continue
        names = stored['image'].split('+')
        computed = compute_case(stored['image'], [synthetic[n] for n in names],
                                stored['setting'], _default_tokenize)
        _compare(stored, computed)


def test_photo_layouts_unchanged(reference, photos):
    assert _check_group(reference, photos, 'photo',
                        _default_tokenize) == 8 * len(SETTINGS)


def _explicit_entropy_scorer(tokenizer, batch):
    """scorer='entropy' named explicitly, through the registry."""
    from mmapt.tokenizer import PatchTokenizer
    explicit = PatchTokenizer(
        tokenizer.patch_size,
        tokenizer.thresholds,
        window_size=tokenizer.window_size,
        num_prefix_tokens=tokenizer.num_prefix_tokens,
        scorer=dict(type='entropy', entropy_bins=512))
    return explicit(batch)


def _budget_at_threshold_count(tokenizer, batch):
    """Budget mode with the thresholds as floor, at exactly the threshold
    layout's token count: the same layout."""
    from mmapt.tokenizer import PatchTokenizer
    count = int(tokenizer(batch).tokens_per_image[0])
    budget = PatchTokenizer(
        tokenizer.patch_size,
        tokenizer.thresholds,
        window_size=tokenizer.window_size,
        num_prefix_tokens=tokenizer.num_prefix_tokens,
        token_budget=count,
        threshold_floor=True)
    return budget(batch)


def test_explicit_entropy_scorer_reproduces_layouts(reference):
    assert _check_group(reference, synthetic_images(), 'synthetic',
                        _explicit_entropy_scorer) == 6 * len(SETTINGS)


def test_budget_with_threshold_floor_reproduces_layouts(reference):
    synthetic = synthetic_images()
    checked = 0
    for stored in reference['cases']:
        if stored['group'] != 'synthetic':
            continue
        computed = compute_case(stored['image'], [synthetic[stored['image']]],
                                stored['setting'], _budget_at_threshold_count)
        _compare(stored, computed)
        checked += 1
    assert checked == 6 * len(SETTINGS)


def _write(photo_dir=None) -> None:
    paths = None
    if photo_dir:
        from mmapt.apis.images import SAMPLE_PHOTOS
        paths = [os.path.join(photo_dir, name) for name in SAMPLE_PHOTOS]
    cases = all_cases(photo_images(paths), _default_tokenize)
    with open(FIXTURE, 'w') as f:
        json.dump(
            dict(
                description='APT entropy layouts before the scorer registry; '
                'see tests/test_tokenizer/test_entropy_layouts.py',
                settings={
                    k: dict(v)
                    for k, v in SETTINGS.items()
                },
                photo_side=PHOTO_SIDE,
                cases=cases),
            f,
            separators=(',', ':'))
    print(f'wrote {len(cases)} cases to {FIXTURE} '
          f'({os.path.getsize(FIXTURE)} bytes)')


if __name__ == '__main__':
    if '--write' not in sys.argv:
        sys.exit('usage: python '
                 'tests/test_tokenizer/test_entropy_layouts.py --write '
                 '[--photo-dir DIR]')
    photo_dir = None
    if '--photo-dir' in sys.argv:
        photo_dir = sys.argv[sys.argv.index('--photo-dir') + 1]
    _write(photo_dir)
