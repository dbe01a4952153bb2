# Copyright (c) mmapt contributors. All rights reserved.
"""Generate a small COCO-format instance-segmentation set of textured shapes.

Layout (the COCO 2017 layout, so COCO configs work with only ``data_root``
changed)::

    OUT_DIR/annotations/instances_train2017.json
    OUT_DIR/annotations/instances_val2017.json
    OUT_DIR/train2017/000000.png ...
    OUT_DIR/val2017/000000.png ...

Images have random sizes and aspect ratios (so a square padded canvas has
padding, as with real COCO images at 1536), one of three backgrounds (plain,
linear gradient, Gaussian noise) and 1-5 non-overlapping shapes of four classes
(circle, square, triangle, star), each filled with a two-tone texture
(stripes, checkerboard or speckle) whose colour and pattern lean on the
class. Masks are the exact polygons that were drawn. The content is a pure
function of ``--seed``.

Command line: ``python tools/misc/make_toy_coco.py data/toy_coco``.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

CLASSES = ('circle', 'square', 'triangle', 'star')
# Preferred hue of each class (OpenCV HSV, 0-180): red, green, blue, yellow.
CLASS_HUES = (0, 60, 120, 28)
BACKGROUNDS = ('plain', 'gradient', 'noise')
BACKGROUND_PROBS = (0.5, 0.25, 0.25)


def random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=3).astype(np.float32)


def make_background(rng: np.random.Generator, h: int, w: int,
                    kind: str) -> np.ndarray:
    if kind == 'plain':
        return np.broadcast_to(random_color(rng), (h, w, 3)).copy()
    if kind == 'gradient':
        c0, c1 = random_color(rng), random_color(rng)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return c0 * (1 - t[..., None]) + c1 * t[..., None]
    if kind == 'noise':
        base = random_color(rng)
        sigma = rng.uniform(10, 30)
        return base + rng.normal(0, sigma, size=(h, w, 3)).astype(np.float32)
    raise ValueError(kind)


def hsv_color(hue: float, sat: float, val: float) -> np.ndarray:
    """RGB float colour of an OpenCV HSV triple (hue in [0, 180))."""
    hsv = np.array([[[hue % 180, sat, val]]], dtype=np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def make_texture(rng: np.random.Generator, h: int, w: int,
                 cls_id: int) -> np.ndarray:
    """A two-tone texture with the class's colour and pattern priors.

    Class ``k`` prefers hue ``CLASS_HUES[k]`` (jittered) and pattern
    ``k % 3`` (stripes, checkerboard, speckle; 80% of the time), so colour
    and texture are cues besides the shape, as object classes have in
    photographs; this lets a detector trained from scratch for a few hundred
    iterations learn the classes.
    """
    hue = CLASS_HUES[cls_id] + rng.uniform(-8, 8)
    c0 = hsv_color(hue, rng.uniform(150, 255), rng.uniform(170, 255))
    c1 = hsv_color(hue, rng.uniform(100, 255), rng.uniform(30, 110))
    kind = cls_id % 3 if rng.random() < 0.8 else int(rng.integers(0, 3))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(4, 9)
        t = (xx * math.cos(angle) + yy * math.sin(angle)) / period
        m = (np.floor(t) % 2).astype(np.float32)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(3, 8))
        m = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:  # speckle
        m = (rng.random((h, w)) < 0.5).astype(np.float32)
    tex = c0 * (1 - m[..., None]) + c1 * m[..., None]
    return tex + rng.normal(0, 6, size=(h, w, 3)).astype(np.float32)


def shape_polygon(rng: np.random.Generator, cls: str, cx: float, cy: float,
                  r: float) -> np.ndarray:
    """Polygon (K, 2) in (x, y) of a shape of circumradius ``r``."""
    rot = rng.uniform(0, 2 * math.pi)
    if cls == 'circle':
        angles = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        radii = np.full_like(angles, r)
    elif cls == 'square':
        angles = rot + np.arange(4) * math.pi / 2
        radii = np.full(4, r)
    elif cls == 'triangle':
        angles = rot + np.arange(3) * 2 * math.pi / 3
        radii = np.full(3, r)
    elif cls == 'star':
        angles = rot + np.arange(10) * math.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    else:
        raise ValueError(cls)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)],
                    axis=1)


def make_image(rng: np.random.Generator, min_side: int,
               max_side: int) -> Tuple[np.ndarray, List[dict]]:
    w = int(rng.integers(min_side, max_side + 1))
    h = int(rng.integers(min_side, max_side + 1))
    kind = BACKGROUNDS[rng.choice(len(BACKGROUNDS), p=BACKGROUND_PROBS)]
    img = make_background(rng, h, w, kind)
    occupied = np.zeros((h, w), dtype=bool)
    instances = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(20):
            r = rng.uniform(22, min(h, w) * 0.33)
            cx = rng.uniform(r, w - r)
            cy = rng.uniform(r, h - r)
            cls_id = int(rng.integers(0, len(CLASSES)))
            poly = shape_polygon(rng, CLASSES[cls_id], cx, cy, r)
            mask = np.zeros((h, w), dtype=np.uint8)
            # 4 fractional bits: the polygon is drawn where it is annotated.
            cv2.fillPoly(
                mask, [np.round(poly * 16).astype(np.int32)],
                1,
                lineType=cv2.LINE_8,
                shift=4)
            mask = mask.astype(bool)
            grown = cv2.dilate(
                mask.astype(np.uint8), np.ones((5, 5)),
                iterations=1).astype(bool)
            if mask.sum() < 64 or (grown & occupied).any():
                continue
            occupied |= grown
            tex = make_texture(rng, h, w, cls_id)
            img[mask] = tex[mask]
            ys, xs = np.nonzero(mask)
            x0, y0 = float(xs.min()), float(ys.min())
            x1, y1 = float(xs.max() + 1), float(ys.max() + 1)
            instances.append(
                dict(
                    category_id=cls_id + 1,
                    bbox=[x0, y0, x1 - x0, y1 - y0],
                    area=float(mask.sum()),
                    segmentation=[
                        np.round(poly, 2).reshape(-1).astype(float).tolist()
                    ],
                    iscrowd=0))
            break
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img, instances


def make_split(out_dir: str, split: str, num: int, seed: int, min_side: int,
               max_side: int) -> dict:
    rng = np.random.default_rng(seed)
    img_dir = osp.join(out_dir, f'{split}2017')
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        img, instances = make_image(rng, min_side, max_side)
        file_name = f'{i:06d}.png'
        # RGB content, written in OpenCV's BGR order.
        cv2.imwrite(osp.join(img_dir, file_name), img[..., ::-1])
        images.append(
            dict(
                id=i + 1,
                file_name=file_name,
                height=img.shape[0],
                width=img.shape[1]))
        for inst in instances:
            inst.update(id=len(annotations) + 1, image_id=i + 1)
            annotations.append(inst)
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(CLASSES)
    ]
    coco = dict(
        info=dict(description=f'mmapt toy COCO ({split}, seed {seed})'),
        images=images,
        annotations=annotations,
        categories=categories)
    ann_dir = osp.join(out_dir, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    with open(osp.join(ann_dir, f'instances_{split}2017.json'), 'w') as f:
        json.dump(coco, f)
    return coco


def write_toy_coco(out_dir: str,
                   num_train: int = 320,
                   num_val: int = 64,
                   seed: int = 0,
                   min_side: int = 160,
                   max_side: int = 320) -> Dict[str, dict]:
    """Write both splits (train with ``seed``, val with ``seed + 1``) under
    ``out_dir``; returns the COCO dict of each split.

    Args:
        out_dir (str): The data root (created).
        num_train (int): Training images. Defaults to 320.
        num_val (int): Validation images. Defaults to 64.
        seed (int): Seed of the training split. Defaults to 0.
        min_side (int): Smallest image side, at least 64. Defaults to 160.
        max_side (int): Largest image side. Defaults to 320.
    """
    if min_side < 64 or max_side < min_side:
        raise ValueError('need 64 <= min_side <= max_side, got '
                         f'{min_side} and {max_side}')
    return {
        split: make_split(out_dir, split, num, split_seed, min_side, max_side)
        for split, num, split_seed in (('train', num_train, seed),
                                       ('val', num_val, seed + 1))
    }
