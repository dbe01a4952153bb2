"""Tests of the APT tokenizer: entropy, quadtree selection, packing."""
import math

import numpy as np
import pytest
import torch
from layout_pool import pool

from mmapt.tokenizer import (IMAGENET_MEAN, IMAGENET_STD, PatchTokenizer,
                             build_layout, images_to_gray, patch_entropy,
                             select_patches)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """0-255 RGB (B, 3, H, W) -> the data preprocessor's normalised input."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def reference_entropy(gray: np.ndarray, patch: int, bins: int) -> np.ndarray:
    """Plain numpy reference: one np.histogram per patch."""
    rows, cols = gray.shape[0] // patch, gray.shape[1] // patch
    out = np.zeros((rows, cols))
    for r in range(rows):
        for c in range(cols):
            block = gray[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
            counts, _ = np.histogram(block, bins=bins, range=(0, 255))
            prob = counts / block.size
            prob = prob[prob > 0]
            out[r, c] = -(prob * np.log2(prob)).sum()
    return out


@pytest.mark.parametrize('bins', [8, 64, 512])
@pytest.mark.parametrize('patch', [4, 16, 32])
def test_entropy_matches_numpy_histogram(bins, patch):
    gen = torch.Generator().manual_seed(bins + patch)
    # Integer intensities + 0.25 keep every value away from bin edges for all
    # bin counts used here, so the comparison tests the histogram, not the
    # rounding of edge values.
    gray = torch.randint(0, 255, (2, 64, 96), generator=gen).float() + 0.25
    gray[1, :32, :32] = 100.25  # a constant block
    ours = patch_entropy(gray, patch, bins).numpy()
    for b in range(2):
        ref = reference_entropy(gray[b].numpy(), patch, bins)
        np.testing.assert_allclose(ours[b], ref, atol=1e-4)


def test_entropy_both_histogram_paths_agree():
    """bincount (few pairs) and sort (many pairs) give the same entropy."""
    gray = torch.rand(1, 32, 32) * 255
    dense = patch_entropy(gray, 16, 64)  # 4 patches x 64 bins <= 1024 px
    sparse = patch_entropy(gray, 4, 512)  # 64 patches x 512 bins > 1024 px
    ref_dense = reference_entropy(gray[0].numpy(), 16, 64)
    ref_sparse = reference_entropy(gray[0].numpy(), 4, 512)
    np.testing.assert_allclose(dense[0].numpy(), ref_dense, atol=1e-4)
    np.testing.assert_allclose(sparse[0].numpy(), ref_sparse, atol=1e-4)


def test_entropy_constant_and_noise_extremes():
    const = torch.full((1, 64, 64), 37.0)
    assert patch_entropy(const, 32).abs().max() == 0
    # All 256 values once each in a 16x16 patch with 512 bins: 8 bits.
    ramp = torch.arange(256).float().view(1, 16, 16)
    assert patch_entropy(ramp, 16, 512).item() == pytest.approx(8.0, abs=1e-5)


def test_gray_undoes_normalisation():
    pixels = torch.rand(2, 3, 8, 8) * 255
    gray = images_to_gray(normalise(pixels), IMAGENET_MEAN, IMAGENET_STD)
    expected = (0.2989 * pixels[:, 0] + 0.5870 * pixels[:, 1] +
                0.1140 * pixels[:, 2])
    torch.testing.assert_close(gray, expected, atol=1e-3, rtol=0)


def test_constant_image_uses_largest_patches():
    tok = PatchTokenizer(16, (2, 2, 0.3))
    images = normalise(torch.full((2, 3, 256, 384), 90.0))
    layout = tok(images)
    assert bool((layout.scale_index == 3).all())
    assert layout.tokens_per_image.tolist() == [6, 6]  # (256/128)*(384/128)


def test_uniform_noise_keeps_base_patches():
    tok = PatchTokenizer(16, (5.5, 4.0))
    images = normalise(torch.rand(1, 3, 128, 192) * 255)
    layout = tok(images)
    assert bool((layout.scale_index == 0).all())
    assert layout.num_tokens == 8 * 12
    assert layout.all_base


def test_minus_one_thresholds_give_plain_grid():
    tok = PatchTokenizer(16, (-1, -1, -1))
    images = normalise(torch.full((1, 3, 128, 256), 10.0))  # entropy 0
    layout = tok(images)
    assert layout.all_base and layout.num_tokens == 8 * 16
    # Row-major order, as the plain ViT's tokens.
    assert layout.row.tolist() == [r for r in range(8) for _ in range(16)]
    assert layout.col.tolist() == list(range(16)) * 8


def random_layout(seed, height=8 * 6, width=8 * 5, window=0, scales=4):
    gen = torch.Generator().manual_seed(seed)
    batch = 3
    entropies = [
        torch.rand(batch, height >> s, width >> s, generator=gen) * 4
        for s in range(1, scales)
    ]
    thresholds = (torch.rand(scales - 1, generator=gen) * 4).tolist()
    masks = select_patches(entropies, thresholds, (height, width))
    return masks, build_layout(masks, (height, width), window)


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('window', [0, 8])
def test_tokens_tile_the_grid_exactly_once(seed, window):
    _, layout = random_layout(seed, window=window)
    height, width = layout.grid_size
    coverage = torch.zeros(layout.batch_size, height, width, dtype=torch.long)
    for b, r, c, s in zip(layout.image_index, layout.row, layout.col,
                          layout.side):
        coverage[b, r:r + s, c:c + s] += 1
    assert bool((coverage == 1).all())
    # cell_to_token points every cell at the token that covers it.
    for t in torch.randint(0, layout.num_tokens, (50, )).tolist():
        b, r, c, s = (int(layout.image_index[t]), int(layout.row[t]),
                      int(layout.col[t]), int(layout.side[t]))
        assert bool((layout.cell_to_token[b, r:r + s, c:c + s] == t).all())
    assert int(layout.tokens_per_image.sum()) == layout.num_tokens


def test_quadtree_prefers_coarsest_scale():
    """A region below every threshold becomes one coarsest patch."""
    ent1 = torch.zeros(1, 4, 4)
    ent2 = torch.zeros(1, 2, 2)
    ent2[0, 1, 1] = 9.0  # bottom-right 64 px patch too busy at scale 2
    masks = select_patches([ent1, ent2], [1.0, 1.0], (8, 8))
    assert masks[2].sum() == 3
    assert masks[1].sum() == 4  # the busy quadrant splits into 4 x 32 px
    assert masks[0].sum() == 0


@pytest.mark.parametrize('seed', range(4))
def test_window_order_matches_brute_force(seed):
    window = 8
    _, layout = random_layout(seed, height=16, width=24, window=window)
    height, width = layout.grid_size
    win_cols = width // window
    groups = {}
    for t in range(layout.num_tokens):
        b, r, c = (int(layout.image_index[t]), int(layout.row[t]),
                   int(layout.col[t]))
        key = (b, r // window, c // window)
        groups.setdefault(key, []).append((r, c))
    ordered_keys = sorted(groups)
    lengths = [len(groups[k]) for k in ordered_keys]
    cu = [0] + np.cumsum(lengths).tolist()
    assert layout.cu_seqlens_window.dtype == torch.int32
    assert layout.cu_seqlens_window.tolist() == cu
    assert layout.max_seqlen_window == max(lengths)
    # Contiguity: tokens of each window form one slice, in brute-force order.
    for i, key in enumerate(ordered_keys):
        sl = slice(cu[i], cu[i + 1])
        b, wr, wc = key
        assert bool((layout.image_index[sl] == b).all())
        assert bool((layout.window_index[sl] == b *
                     (height // window) * win_cols + wr * win_cols + wc).all())
        cells = list(zip(layout.row[sl].tolist(), layout.col[sl].tolist()))
        assert cells == sorted(
            cells, key=lambda rc: (rc[0] % window, rc[1] % window))
    per_image = [0] + np.cumsum(layout.tokens_per_image.tolist()).tolist()
    assert layout.cu_seqlens_image.tolist() == per_image
    assert layout.max_seqlen_image == max(layout.tokens_per_image.tolist())


@pytest.mark.parametrize('seed', range(3))
def test_pool_unpack_identities_and_gradients(seed):
    _, layout = random_layout(seed)
    tokens = torch.randn(layout.num_tokens, 5, requires_grad=True)
    dense = layout.unpack(tokens)
    assert dense.shape == (layout.batch_size, 5, *layout.grid_size)
    torch.testing.assert_close(pool(layout, dense), tokens)
    dense.sum().backward()
    # d(sum of unpacked)/d(token) = number of cells it covers.
    expected = (layout.side**2).float().unsqueeze(1).expand(-1, 5)
    torch.testing.assert_close(tokens.grad, expected)

    grid = torch.randn(
        layout.batch_size, 5, *layout.grid_size, requires_grad=True)
    pooled = pool(layout, grid)
    pooled.sum().backward()
    # Each cell contributes 1 / area of its token.
    area = (layout.side**2).float()[layout.cell_to_token]
    torch.testing.assert_close(grid.grad,
                               (1 / area).unsqueeze(1).expand_as(grid))


def test_pool_shared_map_and_mean():
    _, layout = random_layout(1)
    table = torch.randn(1, 3, *layout.grid_size)
    pooled = pool(layout, table)
    for t in torch.randint(0, layout.num_tokens, (40, )).tolist():
        r, c, s = int(layout.row[t]), int(layout.col[t]), int(layout.side[t])
        torch.testing.assert_close(pooled[t], table[0, :, r:r + s,
                                                    c:c + s].mean((1, 2)))


def test_unpack_pool_is_identity_when_all_base():
    masks = [torch.ones(2, 6, 10, dtype=torch.bool)]
    layout = build_layout(masks, (6, 10), 0)
    dense = torch.randn(2, 4, 6, 10)
    torch.testing.assert_close(layout.unpack(pool(layout, dense)), dense)


def test_centers_of_large_patches():
    masks = [
        torch.zeros(1, 4, 4, dtype=torch.bool),
        torch.zeros(1, 2, 2, dtype=torch.bool),
        torch.ones(1, 1, 1, dtype=torch.bool)
    ]
    layout = build_layout(masks, (4, 4), 0)
    assert layout.centers().tolist() == [[1.5, 1.5]]


@pytest.mark.parametrize('thresholds, match', [
    ((2, 2), 'need 3 thresholds'),
    ((2, float('nan'), 1), 'NaN'),
    ((2, '2', 1), 'must be numbers'),
    ('2 2 1', 'must be a sequence'),
    ((2, True, 1), 'must be numbers'),
])
def test_bad_thresholds_raise(thresholds, match):
    with pytest.raises(ValueError, match=match):
        PatchTokenizer(16, thresholds, patch_sizes=(16, 32, 64, 128))


def test_bad_patch_sizes_raise():
    with pytest.raises(ValueError, match=r'patch_size \* 2\*\*i'):
        PatchTokenizer(16, (2, 2), patch_sizes=(16, 32, 48))


def test_image_size_not_divisible_names_the_fix():
    tok = PatchTokenizer(16, (2, 2, 0.3))
    with pytest.raises(
            ValueError,
            match='multiple of 128.*pad_size_divisor=128'
            '.*size_divisor=128'):
        tok(torch.zeros(1, 3, 256, 200))


def test_window_not_multiple_of_largest_patch_raises():
    with pytest.raises(
            ValueError, match='multiple of the largest patch, 8 '
            'cells'):
        PatchTokenizer(16, (2, 2, 0.3), window_size=12)


@pytest.mark.parametrize('window', [-8, 8.0, None, True, '8'])
def test_window_size_must_be_an_int_at_least_zero(window):
    for make in (lambda: PatchTokenizer(16, (2, 2, 0.3), window_size=window),
                 lambda: build_layout(
                     random_layout(0)[0], (48, 40), window_size=window)):
        with pytest.raises(ValueError, match='0 = no windows'):
            make()


def test_window_size_zero_means_no_windows():
    masks, layout = random_layout(1)
    assert layout.window_size == 0 and PatchTokenizer().window_size == 0
    # One group per image: the window offsets are the image offsets.
    assert layout.cu_seqlens_window is layout.cu_seqlens_image
    assert torch.equal(layout.window_index, layout.image_index)
    assert not layout.window_origin().any()
    with pytest.raises(ValueError, match='multiple of the largest patch'):
        build_layout(masks, (48, 40), window_size=12)


def test_partial_windows_at_the_border():
    """Inputs that are a multiple of the largest patch but not of the window
    get shorter (partial) window groups at the bottom/right border."""
    tok = PatchTokenizer(16, (-1, -1, -1), window_size=16)  # no merging
    layout = tok(torch.zeros(1, 3, 256, 384))  # 16 x 24 cells
    counts = layout.cu_seqlens_window.diff().tolist()
    assert counts == [256, 128]  # one full window, one 16 x 8 half window
    # Every token lies in the window its group says.
    ws = 16
    window = layout.row // ws * 2 + layout.col // ws
    assert torch.equal(window, layout.window_index)


def test_keep_ratio_and_stats():
    tok = PatchTokenizer(16, (2, 2, 0.3))
    pixels = torch.rand(2, 3, 256, 256) * 255
    pixels[1] = 50.0  # plain image
    layout = tok(normalise(pixels))
    assert layout.baseline_tokens == 256
    assert layout.keep_ratio[0] == pytest.approx(1.0)
    assert layout.keep_ratio[1] == pytest.approx(4 / 256)
    assert not math.isnan(float(layout.keep_ratio.mean()))
