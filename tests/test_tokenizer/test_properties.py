"""Property tests (hypothesis) of the core APT invariants, on the public API.

Each property runs over random batch sizes, non-square grids, thresholds
(-1 included), windows (partial border windows included) and prefix tokens:

* ``select_patches`` is the quadtree it documents, and the layout's tokens
  cover every base cell exactly once (also through ``PatchTokenizer`` on
  images);
* pooling then unpacking is the identity on a base-size layout, and
  unpacking then pooling is the identity on any layout;
* ``cu_seqlens`` of images and windows agree with the per-image and
  per-window token counts and the prefix tokens;
* no token straddles a window;
* packed ``varlen_attention`` equals dense attention within each group;
* APT backbones with every threshold -1 give their plain backbone's maps.

Examples per property: ``MMAPT_PROPERTY_EXAMPLES`` (default 200, the floor
of the default suite). Runs are derandomized, so CI sees the same examples
every time; a failure prints the falsifying example.
"""
import functools
import math
import os

import numpy as np
import torch
# A test requirement (requirements/tests.txt): imported, not skipped, so a
# missing install fails loudly instead of dropping the properties.
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout_pool import pool

from mmapt.models import APTEVA02, EVA02, APTViT, ViT, varlen_attention
from mmapt.models.backbones import count_tokens
from mmapt.tokenizer import PatchTokenizer, build_layout, select_patches

EXAMPLES = int(os.environ.get('MMAPT_PROPERTY_EXAMPLES', 200))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # reproducible in CI: the same examples every run
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------- strategies
# Small grids keep 200 examples per property fast: at most 16 x 16 cells.
MAX_MULTIPLE = {2: 4, 3: 3, 4: 2}  # grid side in largest patches, per S
ENTROPY_STEP = 0.25
ENTROPY_LEVELS = [i * ENTROPY_STEP for i in range(13)]  # 0 .. 3


@st.composite
def layout_cases(draw, max_batch=3):
    """Random entropy maps, thresholds, grid, windows and prefix tokens."""
    num_scales = draw(st.integers(2, 4))
    largest = 1 << (num_scales - 1)
    multiple = MAX_MULTIPLE[num_scales]
    grid = (largest * draw(st.integers(1, multiple)),
            largest * draw(st.integers(1, multiple)))
    batch = draw(st.integers(1, max_batch))
    # Windows of 1 or 2 largest patches: larger than a small grid, or not
    # dividing it, gives partial windows at the bottom/right border.
    window = draw(st.sampled_from([0, largest, 2 * largest]))
    prefix = draw(st.integers(0, 3))
    thresholds = draw(
        st.lists(
            st.one_of(
                st.just(-1.0),
                st.floats(0.0, 3.0, width=32, allow_subnormal=False),
                st.sampled_from(ENTROPY_LEVELS)),
            min_size=num_scales - 1,
            max_size=num_scales - 1))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    # Entropies on a grid of levels that thresholds also take: ties (an
    # entropy equal to its threshold: no merge) occur.
    entropies = [
        torch.randint(
            len(ENTROPY_LEVELS), (batch, grid[0] >> s, grid[1] >> s),
            generator=gen).float() * ENTROPY_STEP
        for s in range(1, num_scales)
    ]
    return dict(
        num_scales=num_scales,
        grid=grid,
        batch=batch,
        window=window,
        prefix=prefix,
        thresholds=thresholds,
        entropies=entropies)


def _layout(case):
    masks = select_patches(case['entropies'], case['thresholds'], case['grid'])
    return masks, build_layout(masks, case['grid'], case['window'],
                               case['prefix'])


def _tokens(layout):
    """Content tokens as numpy (image, row, col, side) columns."""
    return tuple(t.numpy() for t in (layout.image_index, layout.row,
                                     layout.col, layout.side))


def _coverage(layout):
    """(B, Hc, Wc) how many content tokens cover each cell."""
    cover = np.zeros((layout.batch_size, *layout.grid_size), dtype=np.int64)
    for b, r, c, s in zip(*_tokens(layout)):
        cover[b, r:r + s, c:c + s] += 1
    return cover


def _reference_quadtree(entropies, thresholds, grid, batch):
    """The documented rule, written as a top-down recursion: a patch of
    scale s > 0 is a token when its entropy is below threshold s - 1,
    otherwise its four children are visited; scale 0 cells always are.
    Entropies are float32 and so is the comparison."""
    num_scales = len(entropies) + 1
    keep = [
        np.zeros((batch, grid[0] >> s, grid[1] >> s), dtype=bool)
        for s in range(num_scales)
    ]
    ent = [e.numpy() for e in entropies]

    def visit(b, s, r, c):
        if s == 0 or ent[s - 1][b, r, c] < np.float32(thresholds[s - 1]):
            keep[s][b, r, c] = True
            return
        for dr in (0, 1):
            for dc in (0, 1):
                visit(b, s - 1, 2 * r + dr, 2 * c + dc)

    top = num_scales - 1
    for b in range(batch):
        for r in range(grid[0] >> top):
            for c in range(grid[1] >> top):
                visit(b, top, r, c)
    return keep


# ------------------------------------------------------------- coverage
@PROPERTY
@given(layout_cases())
def test_select_patches_is_the_quadtree(case):
    masks = select_patches(case['entropies'], case['thresholds'], case['grid'])
    want = _reference_quadtree(case['entropies'], case['thresholds'],
                               case['grid'], case['batch'])
    assert len(masks) == case['num_scales']
    for got, ref in zip(masks, want):
        assert got.dtype == torch.bool
        np.testing.assert_array_equal(got.numpy(), ref)


@PROPERTY
@given(layout_cases())
def test_every_cell_covered_by_exactly_one_token(case):
    masks, layout = _layout(case)
    images, rows, cols, sides = _tokens(layout)
    height, width = case['grid']
    assert (sides == 1 << layout.scale_index.numpy()).all()
    # Quadtree-aligned, inside the grid, and each cell covered exactly once.
    assert (rows % sides == 0).all() and (cols % sides == 0).all()
    assert (rows + sides <= height).all() and (cols + sides <= width).all()
    assert (_coverage(layout) == 1).all()
    # One token per kept patch of every scale; counts add up.
    assert layout.num_tokens == sum(int(m.sum()) for m in masks)
    assert layout.tokens_per_image.tolist() == np.bincount(
        images, minlength=case['batch']).tolist()
    assert layout.baseline_tokens == height * width
    torch.testing.assert_close(
        layout.keep_ratio,
        layout.tokens_per_image.float() / (height * width))
    assert layout.all_base == all(not m.any() for m in masks[1:])
    # cell_to_token names, for every cell, the packed token covering it.
    content_of_packed = {
        int(p): i
        for i, p in enumerate(layout.content_index.tolist())
    }
    cell_to_token = layout.cell_to_token.numpy()
    for b in range(case['batch']):
        for r in range(height):
            for c in range(width):
                i = content_of_packed[int(cell_to_token[b, r, c])]
                assert images[i] == b
                assert rows[i] <= r < rows[i] + sides[i]
                assert cols[i] <= c < cols[i] + sides[i]


def _image_batch(gen, batch, height, width, flat_fraction):
    """Normalised images: noise with random flat (constant) squares."""
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    pixels = torch.rand(batch, 3, height, width, generator=gen) * 255
    block = 4
    flat = torch.rand(
        batch, 1, height // block, width // block,
        generator=gen) < flat_fraction
    flat = flat.repeat_interleave(block, 2).repeat_interleave(block, 3)
    pixels = torch.where(flat, torch.full_like(pixels, 128.), pixels)
    return (pixels - mean) / std


@PROPERTY
@given(
    num_scales=st.integers(2, 4),
    size=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    batch=st.integers(1, 3),
    windowed=st.booleans(),
    prefix=st.integers(0, 2),
    thresholds=st.lists(
        st.sampled_from([-1.0, 0.5, 2.0, 6.0]), min_size=3, max_size=3),
    flat_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16))
def test_tokenizer_layout_tiles_images(num_scales, size, batch, windowed,
                                       prefix, thresholds, flat_fraction,
                                       seed):
    """The entropy tokenizer on images (2-px cells): its layout tiles the
    grid and fits the windows, and thresholds of -1 never merge."""
    largest = 1 << (num_scales - 1)
    thresholds = thresholds[:num_scales - 1]
    tokenizer = PatchTokenizer(
        patch_size=2,
        thresholds=thresholds,
        entropy_bins=64,
        window_size=largest if windowed else 0,
        num_prefix_tokens=prefix)
    px = 2 * largest * 2  # two largest patches per unit of `size`
    images = _image_batch(torch.Generator().manual_seed(seed), batch,
                          px * size[0], px * size[1], flat_fraction)
    layout = tokenizer(images)
    assert layout.grid_size == (images.shape[2] // 2, images.shape[3] // 2)
    assert layout.num_prefix_tokens == prefix
    assert (_coverage(layout) == 1).all()
    assert not _straddlers(layout)
    for scale, threshold in enumerate(thresholds, start=1):
        if threshold == -1:
            assert not (layout.scale_index == scale).any()


# --------------------------------------------------------- pack / unpack
def _packed(layout, content, gen):
    """A packed sequence with ``content`` rows at the content positions and
    random prefix rows."""
    packed = torch.randn(
        layout.num_packed,
        content.shape[1],
        generator=gen,
        dtype=content.dtype)
    packed[layout.content_index] = content
    return packed


@PROPERTY
@given(layout_cases(), st.integers(1, 4))
def test_pool_then_unpack_is_identity_on_base_layout(case, channels):
    batch, (height, width) = case['batch'], case['grid']
    masks = [
        torch.full((batch, height >> s, width >> s), s == 0, dtype=torch.bool)
        for s in range(case['num_scales'])
    ]
    layout = build_layout(masks, case['grid'], case['window'], case['prefix'])
    assert layout.all_base and layout.num_tokens == batch * height * width
    gen = torch.Generator().manual_seed(len(case['thresholds']))
    dense = torch.randn(batch, channels, height, width, generator=gen)
    content = pool(layout, dense)
    assert content.shape == (layout.num_tokens, channels)
    # Each base token reads exactly its own cell.
    images, rows, cols, _ = _tokens(layout)
    assert torch.equal(content, dense[images, :, rows, cols])
    assert torch.equal(layout.unpack(_packed(layout, content, gen)), dense)
    # A map shared by all images (a position table) is read by each.
    shared = pool(layout, dense[:1])
    assert torch.equal(shared, dense[0][:, rows, cols].T)


@PROPERTY
@given(layout_cases(), st.integers(1, 4))
def test_unpack_then_pool_is_identity_on_any_layout(case, channels):
    _, layout = _layout(case)
    gen = torch.Generator().manual_seed(channels)
    # Small integers: the mean over a patch of equal values is exact.
    content = torch.randint(
        -50, 50, (layout.num_tokens, channels), generator=gen).float()
    dense = layout.unpack(_packed(layout, content, gen))
    assert dense.shape == (case['batch'], channels, *case['grid'])
    # Every token is repeated over exactly the cells it covers.
    for i, (b, r, c, s) in enumerate(zip(*_tokens(layout))):
        patch = dense[b, :, r:r + s, c:c + s]
        assert torch.equal(patch, content[i][:, None, None].expand_as(patch))
    assert torch.equal(pool(layout, dense), content)


# ------------------------------------------------------ groups / windows
def _straddlers(layout):
    """Tokens whose first and last cell lie in different windows."""
    if not layout.window_size:
        return []
    ws = layout.window_size
    _, rows, cols, sides = _tokens(layout)
    bad = ((rows // ws) != (rows + sides - 1) // ws) | \
        ((cols // ws) != (cols + sides - 1) // ws)
    return np.nonzero(bad)[0].tolist()


def _groups(cu_seqlens, num_packed):
    """Group id of every packed position, from ``cu_seqlens``."""
    cu = cu_seqlens.long()
    assert cu_seqlens.dtype == torch.int32
    assert cu[0] == 0 and cu[-1] == num_packed
    assert (cu[1:] >= cu[:-1]).all()
    lengths = cu[1:] - cu[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths)),
                                   lengths).numpy(), lengths


@PROPERTY
@given(layout_cases())
def test_cu_seqlens_match_image_and_window_counts(case):
    _, layout = _layout(case)
    batch, prefix = case['batch'], case['prefix']
    images, rows, cols, _ = _tokens(layout)
    counts = np.bincount(images, minlength=batch)

    # Image groups: image b's content tokens plus its prefix tokens, in
    # image order.
    image_group, lengths = _groups(layout.cu_seqlens_image, layout.num_packed)
    assert lengths.tolist() == (counts + prefix).tolist()
    assert layout.max_seqlen_image == int(lengths.max())
    assert layout.num_packed == layout.num_tokens + batch * prefix
    content = layout.content_index.numpy()
    prefix_pos = layout.prefix_index.numpy()
    assert sorted(content.tolist() + prefix_pos.tolist()) == list(
        range(layout.num_packed))
    assert (image_group[content] == images).all()
    assert layout.packed_image_index.tolist() == image_group.tolist()
    # Each image's prefix tokens open its slice.
    starts = layout.cu_seqlens_image[:-1].long().numpy()
    want_prefix = (starts[:, None] + np.arange(prefix)).reshape(-1)
    assert prefix_pos.tolist() == want_prefix.tolist()

    # Window groups: nested in the image groups; a group holds either the
    # content tokens of exactly one window or one image's prefix tokens.
    window_group, wlengths = _groups(layout.cu_seqlens_window,
                                     layout.num_packed)
    assert layout.max_seqlen_window == int(wlengths.max())
    for g in range(len(wlengths)):
        assert len(set(image_group[window_group == g])) <= 1
    if not layout.window_size:
        assert torch.equal(layout.cu_seqlens_window, layout.cu_seqlens_image)
        return
    ws = layout.window_size
    height, width = case['grid']
    win_cols = math.ceil(width / ws)
    num_windows = math.ceil(height / ws) * win_cols
    window_key = images * num_windows + (rows // ws) * win_cols + cols // ws
    groups_of_window = {}
    for key, g in zip(window_key.tolist(), window_group[content].tolist()):
        groups_of_window.setdefault(key, set()).add(g)
    # Every window of every image is one group, its own.
    assert len(groups_of_window) == batch * num_windows
    assert all(len(gs) == 1 for gs in groups_of_window.values())
    content_groups = [next(iter(gs)) for gs in groups_of_window.values()]
    assert len(set(content_groups)) == len(content_groups)
    per_window = np.bincount(window_key, minlength=batch * num_windows)
    for key, (g, ) in groups_of_window.items():
        assert wlengths[g] == per_window[key]
    # The prefix tokens of an image form groups of their own.
    prefix_groups = set(window_group[prefix_pos].tolist())
    assert not prefix_groups & set(content_groups)
    assert len(wlengths) == len(content_groups) + len(prefix_groups)
    assert sum(int(wlengths[g]) for g in prefix_groups) == batch * prefix


@PROPERTY
@given(layout_cases())
def test_no_token_straddles_a_window(case):
    _, layout = _layout(case)
    assert not _straddlers(layout)
    origin = layout.window_origin()
    assert origin.shape == (layout.num_tokens, 2)
    if not layout.window_size:
        assert not origin.any()
        return
    ws = layout.window_size
    assert torch.equal(origin[:, 0], layout.row // ws * ws)
    assert torch.equal(origin[:, 1], layout.col // ws * ws)


# ------------------------------------------------------------- attention
def _dense_attention(q, k, v, same_group):
    """Softmax attention with an explicit (N, N) bool mask, per head."""
    scores = torch.einsum('nhd,mhd->hnm', q, k) * q.shape[-1]**-0.5
    scores = scores.masked_fill(~same_group, float('-inf'))
    return torch.einsum('hnm,mhd->nhd', scores.softmax(-1), v)


def _qkv(num_tokens, heads, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(
            num_tokens, heads, dim, generator=gen, dtype=torch.float64)
        for _ in range(3)
    ]


@PROPERTY
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1,
                     max_size=10).filter(lambda ls: sum(ls) > 0),
    heads=st.integers(1, 3),
    dim=st.integers(1, 16),
    seed=st.integers(0, 2**16))
def test_varlen_attention_equals_dense_per_group(lengths, heads, dim, seed):
    cu = torch.tensor([0] + np.cumsum(lengths).tolist(), dtype=torch.int32)
    q, k, v = _qkv(sum(lengths), heads, dim, seed)
    group = torch.repeat_interleave(
        torch.arange(len(lengths)), torch.tensor(lengths))
    want = _dense_attention(q, k, v, group[:, None] == group[None, :])
    got = varlen_attention(q, k, v, cu, max(lengths))
    assert got.shape == q.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@PROPERTY
@given(
    layout_cases(max_batch=2), st.integers(1, 2), st.booleans(),
    st.integers(0, 2**16))
def test_varlen_attention_on_layout_groups(case, heads, windows, seed):
    """Attention over a layout's image or window groups equals dense
    attention masked by the tokens' own (image, window): what a global or
    window block of the APT backbone computes."""
    _, layout = _layout(case)
    q, k, v = _qkv(layout.num_packed, heads, 8, seed)
    image = layout.packed_image_index
    same = image[:, None] == image[None, :]
    if windows and layout.window_size:
        cu, max_len = layout.cu_seqlens_window, layout.max_seqlen_window
        ws = layout.window_size
        # Window of every packed token; prefix tokens: a window of their own
        # (-1), attending among the image's prefix tokens only.
        window = torch.full((layout.num_packed, ), -1, dtype=torch.long)
        window[layout.content_index] = (layout.row // ws) * 10**4 + \
            layout.col // ws
        same &= window[:, None] == window[None, :]
    else:
        cu, max_len = layout.cu_seqlens_image, layout.max_seqlen_image
    want = _dense_attention(q, k, v, same)
    got = varlen_attention(q, k, v, cu, max_len)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------- no-merge invariant
ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)
PATCH = 4  # px: 16 px largest patch at 3 scales keeps the inputs tiny


@functools.lru_cache(maxsize=None)
def _backbone_pair(family, num_scales, windowed, prefix):
    """A plain backbone and its APT class (thresholds all -1), sharing
    randomised weights; block 0 windowed when ``windowed``, block 1 global.
    """
    largest = 1 << (num_scales - 1)
    cfg = dict(
        arch=ARCH,
        img_size=64,
        patch_size=PATCH,
        window_size=largest if windowed else 0,
        global_attn_indexes=(1, ),
        out_indices=(0, 1))
    if family == 'eva02':
        plain_cls, apt_cls = EVA02, APTEVA02
        cfg.update(pretrain_img_size=32, pretrain_patch_size=PATCH)
        if prefix:
            cfg.update(use_cls_token=True)
    else:
        plain_cls, apt_cls = ViT, APTViT
        cfg.update(
            pretrain_img_size=32,
            pretrain_patch_size=PATCH,
            use_cls_token=prefix > 0,
            num_register_tokens=max(prefix - 1, 0))
    torch.manual_seed(num_scales * 10 + prefix)
    plain = plain_cls(**cfg).eval()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    apt = apt_cls(thresholds=(-1.0, ) * (num_scales - 1), **cfg).eval()
    result = apt.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith('apt_embed.') for k in result.missing_keys)
    return plain, apt


@PROPERTY
@given(
    family=st.sampled_from(['eva02', 'vit']),
    num_scales=st.integers(2, 3),
    windowed=st.booleans(),
    prefix=st.sampled_from([0, 1, 3]),
    batch=st.integers(1, 3),
    size=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    seed=st.integers(0, 2**16))
def test_no_merge_equals_plain_backbone(family, num_scales, windowed, prefix,
                                        batch, size, seed):
    """APT with every threshold -1 == its plain backbone: windows that do
    not divide the input (partial border windows), class / register tokens,
    non-square inputs, any batch."""
    if family == 'eva02':
        prefix = min(prefix, 1)  # EVA-02 has a class token, no registers
    plain, apt = _backbone_pair(family, num_scales, windowed, prefix)
    largest_px = PATCH << (num_scales - 1)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(
        batch, 3, largest_px * size[0], largest_px * size[1], generator=gen)
    with torch.no_grad(), count_tokens(apt) as counter:
        want = plain(x)
        got = apt(x)
    assert counter.per_image()['keep_ratio'].tolist() == [1.0] * batch
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        assert a.shape == b.shape == (batch, ARCH['embed_dims'],
                                      x.shape[2] // PATCH, x.shape[3] // PATCH)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
