"""Generate a small synthetic data set in the ADE20K directory layout.

The toy scenes imitate indoor images at a small scale: a wall over a floor
(each plain, a smooth gradient or noisy) with textured objects in front of
them and unlabelled clutter. Large plain regions exist on purpose, as they do
in real indoor scenes (walls, floors, ceilings): those are where APT merges
patches. Object textures carry grain (many grey levels, high entropy, as real
textures do) and the whole image faint sensor noise, so APT's entropy test
separates flat surfaces from textured ones as it would on photographs. Every
object class has its own texture and shape, so the task is learnable from
scratch in a few hundred iterations.

Layout written under ``OUT_DIR`` (what ``ADE20KDataset`` / ``BaseSegDataset``
read)::

    images/{training,validation}/toy_XXXXXX.jpg
    annotations/{training,validation}/toy_XXXXXX.png   (uint8 labels)

Labels follow ADE20K's reduce-zero-label convention: 0 = unlabelled/ignored
(clutter), ``1..len(CLASSES)`` = the classes below, in order; with
``reduce_zero_label=True`` they become ``0..len(CLASSES)-1`` and 0 becomes 255.
The generator is deterministic: image ``i`` of a split depends only on
``--seed``, the split and ``i``.

Command line: ``python tools/misc/make_toy_ade.py data/toy_ade``.
"""
import os
import os.path as osp
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

CLASSES = ('wall', 'floor', 'painting', 'rug', 'lamp', 'plant')
PALETTE = ((120, 120, 120), (80, 50, 50), (255, 6, 51), (255, 9, 92),
           (224, 5, 255), (4, 200, 3))
WALL, FLOOR, PAINTING, RUG, LAMP, PLANT = range(1, len(CLASSES) + 1)
IGNORE = 0
# Colour prior (RGB) of each object class's texture; walls, floors and
# clutter take random colours.
BASE_COLORS = {
    PAINTING: (190, 50, 50),
    RUG: (50, 70, 180),
    LAMP: (220, 200, 70),
    PLANT: (50, 150, 60),
}

# Sizes of the generated images (before any pipeline resizing).
DEFAULT_HEIGHT_RANGE = (224, 320)
DEFAULT_WIDTH_RANGE = (288, 432)


def _random_color(rng: np.random.RandomState,
                  low: int = 20,
                  high: int = 235) -> np.ndarray:
    return rng.randint(low, high + 1, size=3).astype(np.float32)


def _background(rng: np.random.RandomState, height: int, width: int,
                style: str) -> np.ndarray:
    """A (height, width, 3) float32 fill: plain, gradient or noisy."""
    color = _random_color(rng)
    image = np.broadcast_to(color, (height, width, 3)).astype(np.float32)
    if style == 'gradient':
        other = np.clip(color + rng.uniform(-60, 60, size=3), 0, 255)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        image = color * (1 - t[..., None]) + other * t[..., None]
    elif style == 'noisy':
        image = image + rng.normal(0, 25, size=(height, width, 1))
    return image.astype(np.float32)


def _texture(rng: np.random.RandomState,
             height: int,
             width: int,
             kind: str,
             base_color: Optional[Sequence[int]] = None,
             center: Tuple[float, float] = (0, 0),
             radius: float = 1) -> np.ndarray:
    """A (height, width, 3) float32 texture of the given kind.

    ``base_color`` (RGB), jittered, is the texture's first colour: object
    classes have a colour prior, as many real classes do (plants are green).
    ``center`` (x, y) and ``radius`` place the ``'glow'`` texture.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c1, c2 = _random_color(rng), _random_color(rng)
    if base_color is not None:
        c1 = np.clip(
            np.asarray(base_color, np.float32) + rng.uniform(-35, 35, 3), 0,
            255)
    while np.abs(c1 - c2).sum() < 150:  # keep the two colours apart
        c2 = _random_color(rng)
    if kind == 'checker':
        cell = rng.randint(5, 11)
        mask = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == 'stripes':
        period = rng.uniform(6, 12)
        angle = rng.uniform(0, np.pi)
        phase = xx * np.cos(angle) + yy * np.sin(angle)
        mask = (np.sin(2 * np.pi * phase / period) > 0).astype(np.float32)
    elif kind == 'dots':
        spacing = rng.randint(7, 12)
        dot = spacing * rng.uniform(0.25, 0.4)
        dy = (yy % spacing) - spacing / 2
        dx = (xx % spacing) - spacing / 2
        mask = (dx * dx + dy * dy < dot * dot).astype(np.float32)
    elif kind == 'glow':
        # bright at ``center`` (x, y), the base colour at ``radius``
        cx, cy = center
        dist = np.sqrt((yy - cy)**2 + (xx - cx)**2)
        mask = 1 - np.clip(dist / max(radius, 1), 0, 1)
        c2 = np.clip(c1 + 90, 0, 255)
    elif kind == 'noise':
        return np.clip(c1 + rng.normal(0, 40, size=(height, width, 3)), 0,
                       255).astype(np.float32)
    else:
        raise ValueError(f'unknown texture {kind!r}')
    mask = mask[..., None]
    texture = c1 * (1 - mask) + c2 * mask
    if kind != 'glow':
        # Surface grain: real object textures are rich in grey levels (high
        # entropy); only smooth surfaces like walls, floors and lamps are not.
        texture = texture + rng.normal(
            0, rng.uniform(6, 10), size=(height, width, 1))
    return texture.astype(np.float32)


def _paint(image: np.ndarray, label: np.ndarray, mask: np.ndarray,
           texture: np.ndarray, value: int) -> None:
    """Paint ``texture`` into ``image`` and ``value`` into ``label``."""
    sel = mask.astype(bool)
    image[sel] = texture[sel]
    label[sel] = value


def make_scene(rng: np.random.RandomState, height: int,
               width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one toy indoor scene.

    Args:
        rng (np.random.RandomState): Source of randomness.
        height (int): Image height in pixels.
        width (int): Image width in pixels.

    Returns:
        tuple[np.ndarray, np.ndarray]: A ``(height, width, 3)`` uint8 BGR
        image and a ``(height, width)`` uint8 label map (0 = ignore).
    """
    styles = ('plain', 'gradient', 'noisy')
    wall_style = styles[rng.choice(3, p=(0.55, 0.3, 0.15))]
    floor_style = styles[rng.choice(3, p=(0.5, 0.3, 0.2))]
    horizon = int(height * rng.uniform(0.55, 0.75))

    image = np.zeros((height, width, 3), np.float32)
    label = np.zeros((height, width), np.uint8)
    image[:horizon] = _background(rng, horizon, width, wall_style)
    label[:horizon] = WALL
    image[horizon:] = _background(rng, height - horizon, width, floor_style)
    label[horizon:] = FLOOR

    def blank() -> np.ndarray:
        return np.zeros((height, width), np.uint8)

    # Paintings: checkered rectangles on the wall.
    for _ in range(rng.randint(0, 3)):
        h = int(height * rng.uniform(0.15, 0.3))
        w = int(width * rng.uniform(0.12, 0.3))
        y = rng.randint(0, max(horizon - h, 1))
        x = rng.randint(0, width - w)
        mask = blank()
        mask[y:y + h, x:x + w] = 1
        _paint(image, label, mask,
               _texture(rng, height, width, 'checker', BASE_COLORS[PAINTING]),
               PAINTING)
    # Rugs: striped ellipses on the floor.
    if rng.rand() < 0.7:
        mask = blank()
        center = (int(rng.uniform(0.2, 0.8) * width),
                  int(rng.uniform(horizon + 0.3 * (height - horizon), height)))
        axes = (int(width * rng.uniform(0.12, 0.3)),
                int((height - horizon) * rng.uniform(0.2, 0.45)))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 1, -1)
        _paint(image, label, mask,
               _texture(rng, height, width, 'stripes', BASE_COLORS[RUG]), RUG)
    # Lamps: glowing discs, anywhere.
    for _ in range(rng.randint(1, 3)):
        mask = blank()
        radius = int(min(height, width) * rng.uniform(0.08, 0.15))
        center = (rng.randint(radius, width - radius),
                  rng.randint(radius, height - radius))
        cv2.circle(mask, center, radius, 1, -1)
        glow = _texture(rng, height, width, 'glow', BASE_COLORS[LAMP], center,
                        radius)
        _paint(image, label, mask, glow, LAMP)
    # Plants: dotted triangles standing on the floor line.
    for _ in range(rng.randint(1, 3)):
        mask = blank()
        base_w = int(width * rng.uniform(0.14, 0.26))
        tall = int(height * rng.uniform(0.3, 0.5))
        x = rng.randint(0, width - base_w)
        bottom = min(height - 1,
                     horizon + rng.randint(0, max((height - horizon) // 2, 1)))
        pts = np.array(
            [[x, bottom], [x + base_w, bottom],
             [x + base_w // 2, max(bottom - tall, 0)]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
        _paint(image, label, mask,
               _texture(rng, height, width, 'dots', BASE_COLORS[PLANT]), PLANT)
    # Clutter: noisy quadrilaterals labelled 0 (ignored), like ADE20K's
    # unlabelled pixels.
    for _ in range(rng.randint(0, 2)):
        mask = blank()
        cx, cy = rng.randint(0, width), rng.randint(0, height)
        size = min(height, width) * rng.uniform(0.05, 0.1)
        pts = np.stack([
            cx + rng.uniform(-size, size, 4), cy + rng.uniform(-size, size, 4)
        ], 1).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
        _paint(image, label, mask, _texture(rng, height, width, 'noise'),
               IGNORE)

    # Faint sensor noise everywhere: flat regions stay low-entropy (APT still
    # merges them) but are not perfectly constant.
    image += rng.normal(0, 2.0, size=(height, width, 1))
    rgb = np.clip(image, 0, 255).astype(np.uint8)
    return rgb[..., ::-1].copy(), label


def write_split(out_dir: str, split: str, num_images: int, seed: int,
                height_range: Tuple[int, int],
                width_range: Tuple[int, int]) -> None:
    """Write ``num_images`` scenes of one split (``training`` or
    ``validation``)."""
    img_dir = osp.join(out_dir, 'images', split)
    ann_dir = osp.join(out_dir, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    split_offset = 0 if split == 'training' else 1_000_003
    for i in range(num_images):
        rng = np.random.RandomState(seed * 7919 + split_offset + i)
        height = rng.randint(height_range[0], height_range[1] + 1)
        width = rng.randint(width_range[0], width_range[1] + 1)
        image, label = make_scene(rng, height, width)
        name = f'toy_{i:06d}'
        cv2.imwrite(
            osp.join(img_dir, name + '.jpg'), image,
            [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(osp.join(ann_dir, name + '.png'), label)


def write_toy_ade(out_dir: str,
                  num_train: int = 200,
                  num_val: int = 40,
                  seed: int = 0,
                  height_range: Tuple[int, int] = DEFAULT_HEIGHT_RANGE,
                  width_range: Tuple[int, int] = DEFAULT_WIDTH_RANGE) -> None:
    """Write the ``training`` and ``validation`` splits under ``out_dir``.

    Args:
        out_dir (str): The data root (created).
        num_train (int): Training images. Defaults to 200.
        num_val (int): Validation images. Defaults to 40.
        seed (int): Seed of both splits. Defaults to 0.
        height_range (tuple[int, int]): Image heights drawn from it.
        width_range (tuple[int, int]): Image widths drawn from it.
    """
    for split, num in (('training', num_train), ('validation', num_val)):
        write_split(out_dir, split, num, seed, tuple(height_range),
                    tuple(width_range))
