"""The patch layout drawn over an image with Pillow, for
``tools/analysis/visualize_patches.py`` (no cv2 needed)."""
import numpy as np
from PIL import Image, ImageDraw

# One colour per scale, base size first.
SCALE_COLOURS = [(255, 64, 64), (255, 200, 0), (64, 200, 255), (120, 255, 120),
                 (220, 120, 255), (255, 255, 255)]


def with_caption(picture: Image.Image, caption: str) -> Image.Image:
    """``picture`` above a black band with ``caption``."""
    band = Image.new('RGB', (picture.width, 28), (0, 0, 0))
    ImageDraw.Draw(band).text((6, 8), caption, fill=(255, 255, 255))
    out = Image.new('RGB', (picture.width, picture.height + band.height))
    out.paste(picture, (0, 0))
    out.paste(band, (0, picture.height))
    return out


def beside(left: Image.Image, right: Image.Image, gap: int = 8) -> Image.Image:
    out = Image.new(
        'RGB',
        (left.width + gap + right.width, max(left.height, right.height)),
        (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (left.width + gap, 0))
    return out


def draw_layout(image: np.ndarray, layout, patch_size: int,
                caption: str) -> Image.Image:
    """The image with every token's square outlined in its scale colour."""
    canvas = Image.fromarray(image).convert('RGB')
    draw = ImageDraw.Draw(canvas)
    for scale, row, col, side in zip(layout.scale_index.tolist(),
                                     layout.row.tolist(), layout.col.tolist(),
                                     layout.side.tolist()):
        top, left = row * patch_size, col * patch_size
        size = side * patch_size
        draw.rectangle([left, top, left + size - 1, top + size - 1],
                       outline=SCALE_COLOURS[scale % len(SCALE_COLOURS)])
    return with_caption(canvas, caption)
