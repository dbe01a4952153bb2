"""Budget mode: exact token counts, greedy order, floors and errors."""
import heapq

import pytest
import torch
from conftest import flat_and_noise_images

from mmapt.tokenizer import (PatchTokenizer, budget_patches, min_tokens,
                             select_patches)


def _coverage(masks):
    """(B, Hc, Wc) number of tokens covering each cell."""
    total = torch.zeros(masks[0].shape, dtype=torch.long)
    for scale, mask in enumerate(masks):
        factor = 1 << scale
        total += mask.long().repeat_interleave(factor,
                                               1).repeat_interleave(factor, 2)
    return total


def _tokens(masks):
    return sum(m.flatten(1).sum(1) for m in masks)


def _greedy_reference(scores, grid, budget):
    """Best-first splitting with a heap, one image, written out: pop the
    splittable patch of the highest path score (the lowest score on its way
    from the coarsest grid), coarser first, then row-major; push its four
    children."""
    num_scales = len(scores) + 1
    top = num_scales - 1
    heap = []

    def push(scale, row, col, parent_path):
        if scale > 0:
            path = min(parent_path, float(scores[scale - 1][row, col]))
            width = grid[1] >> scale
            heapq.heappush(heap, (-path, -scale, row * width + col, row, col))

    for row in range(grid[0] >> top):
        for col in range(grid[1] >> top):
            push(top, row, col, float('inf'))
    tokens = (grid[0] >> top) * (grid[1] >> top)
    split = set()
    while heap and tokens + 3 <= budget:
        path, scale, _, row, col = heapq.heappop(heap)
        scale = -scale
        split.add((scale, row, col))
        tokens += 3
        for dr in (0, 1):
            for dc in (0, 1):
                push(scale - 1, 2 * row + dr, 2 * col + dc, -path)
    keep = [
        torch.zeros(grid[0] >> s, grid[1] >> s, dtype=torch.bool)
        for s in range(num_scales)
    ]
    for row in range(grid[0] >> top):
        for col in range(grid[1] >> top):
            keep[top][row, col] = (top, row, col) not in split
    for scale in range(top - 1, -1, -1):
        for row in range(grid[0] >> scale):
            for col in range(grid[1] >> scale):
                keep[scale][row,
                            col] = ((scale + 1, row // 2, col // 2) in split
                                    and (scale, row, col) not in split)
    return keep


@pytest.mark.parametrize('seed', range(4))
def test_equals_best_first_greedy(seed):
    """The vectorised top-k equals best-first splitting with a heap, on
    random scores and on quantised ones (many ties)."""
    gen = torch.Generator().manual_seed(seed)
    grid = (16, 24)
    scores = [
        torch.rand(2, 16 >> s, 24 >> s, generator=gen) for s in (1, 2, 3)
    ]
    if seed % 2:
        scores = [(s * 4).floor() for s in scores]
    least = min_tokens(grid, 4)
    for budget in (least, least + 5, 100, 200, 383, 384, 500):
        masks = budget_patches(scores, grid, budget)
        for image in range(2):
            want = _greedy_reference([s[image] for s in scores], grid, budget)
            for got, ref in zip(masks, want):
                assert torch.equal(got[image], ref), (seed, budget)


def _random_case(gen):
    scales = int(torch.randint(2, 5, (1, ), generator=gen))
    largest = 16 << (scales - 1)
    rows = int(torch.randint(1, 4, (1, ), generator=gen))
    cols = int(torch.randint(1, 4, (1, ), generator=gen))
    height = max(rows * largest, 64)
    width = max(cols * largest, 64)
    height += -height % largest
    width += -width % largest
    batch = int(torch.randint(1, 4, (1, ), generator=gen))
    return scales, batch, height, width


@pytest.mark.parametrize('scorer', ['entropy', 'contrast', 'gradient'])
def test_every_image_within_three_of_the_budget(scorer):
    """Property: random images, sizes, scales and budgets; every image of
    the batch gets between budget - 2 and budget content tokens and the
    tokens tile the grid exactly once."""
    gen = torch.Generator().manual_seed(hash(scorer) % 1000)
    for _ in range(12):
        scales, batch, height, width = _random_case(gen)
        images = flat_and_noise_images(
            batch, height, width, (height // 2, width // 3),
            int(torch.randint(0, 99, (1, ), generator=gen)))
        tok = PatchTokenizer(16, (2.0, ) * (scales - 1), scorer=scorer)
        grid = (height // 16, width // 16)
        least = min_tokens(grid, scales)
        cells = grid[0] * grid[1]
        for budget in torch.randint(
                least, cells + 1, (3, ), generator=gen).tolist():
            tok.token_budget = budget
            layout = tok(images)
            counts = layout.tokens_per_image.tolist()
            assert all(budget - 3 < n <= budget
                       for n in counts), (scales, height, width, budget,
                                          counts)
            masks = [m for m in tok.select(tok.score_maps(images), grid)]
            assert bool((_coverage(masks) == 1).all())


def test_keep_ratio_budget_and_shortcuts():
    images = flat_and_noise_images(2, 256, 384, (128, 128))
    cells = 16 * 24
    for ratio in (0.05, 0.3, 0.5, 0.77, 1.0):
        layout = PatchTokenizer(16, (2, 2, 0.3), keep_ratio=ratio)(images)
        budget = int(ratio * cells + 1e-9)
        assert all(budget - 3 < n <= budget
                   for n in layout.tokens_per_image.tolist())
    # keep_ratio 1 and a budget above the grid: the plain grid.
    assert PatchTokenizer(16, (2, 2, 0.3), keep_ratio=1.0)(images).all_base
    assert PatchTokenizer(16, (2, 2, 0.3), token_budget=10**6)(images).all_base
    # The minimum: one 128-px patch per cell of the 2 x 3 coarsest grid.
    layout = PatchTokenizer(16, (2, 2, 0.3), token_budget=8)(images)
    assert layout.tokens_per_image.tolist() == [6, 6]
    assert bool((layout.scale_index == 3).all())


def test_deterministic_and_batch_independent():
    images = flat_and_noise_images(3, 256, 256, (100, 140), seed=3)
    tok = PatchTokenizer(16, (2, 2, 0.3), token_budget=120, window_size=8)
    first, second = tok(images), tok(images)
    for field in ('image_index', 'scale_index', 'row', 'col'):
        assert torch.equal(getattr(first, field), getattr(second, field))
    for index in range(3):
        alone = tok(images[index:index + 1])
        sel = first.image_index == index
        assert torch.equal(first.row[sel], alone.row)
        assert torch.equal(first.col[sel], alone.col)
        assert torch.equal(first.scale_index[sel], alone.scale_index)


def test_ties_coarse_first_then_row_major():
    """All scores equal: splits go to the coarsest patches, top-left first."""
    grid = (8, 12)
    scores = [torch.zeros(1, 8 >> s, 12 >> s) for s in (1, 2)]
    masks = budget_patches(scores, grid, min_tokens(grid, 3) + 6)
    # 6 coarsest 4x4-cell patches; the first two (row-major) are split.
    assert masks[2][0].flatten().tolist() == [
        False, False, True, True, True, True
    ]
    assert int(masks[1].sum()) == 8 and int(masks[0].sum()) == 0


def test_threshold_floor_contains_the_threshold_layout():
    images = flat_and_noise_images(2, 256, 384, (128, 200), seed=1)
    thresholds = (9.5, 1.0, 1.0)
    plain = PatchTokenizer(16, thresholds)
    thr_masks = plain.select(plain.score_maps(images), (16, 24))
    thr_tokens = _tokens(thr_masks).tolist()
    assert thr_tokens[0] != thr_tokens[1]
    budget = max(thr_tokens) + 20
    tok = PatchTokenizer(
        16, thresholds, token_budget=budget, threshold_floor=True)
    masks = tok.select(tok.score_maps(images), (16, 24))
    # Every patch the thresholds split is split: each finer threshold token
    # lies inside a token of the budget layout at the same or finer scale.
    budget_scale = torch.zeros(2, 16, 24, dtype=torch.long)
    thr_scale = torch.zeros(2, 16, 24, dtype=torch.long)
    for scale, (mask, ref) in enumerate(zip(masks, thr_masks)):
        f = 1 << scale
        budget_scale += scale * mask.long().repeat_interleave(
            f, 1).repeat_interleave(f, 2)
        thr_scale += scale * ref.long().repeat_interleave(
            f, 1).repeat_interleave(f, 2)
    assert bool((budget_scale <= thr_scale).all())
    assert all(budget - 3 < n <= budget for n in _tokens(masks).tolist())
    # At exactly the threshold layout's count the floor reproduces it.
    one = images[:1]
    tok = PatchTokenizer(
        16, thresholds, token_budget=thr_tokens[0], threshold_floor=True)
    masks = tok.select(tok.score_maps(one), (16, 24))
    ref = select_patches(plain.score_maps(one), thresholds, (16, 24))
    assert all(torch.equal(a, b) for a, b in zip(masks, ref))
    # Without the floor, score order alone gives another layout.
    free = PatchTokenizer(16, thresholds, token_budget=thr_tokens[0])
    free_masks = free.select(free.score_maps(one), (16, 24))
    assert not all(torch.equal(a, b) for a, b in zip(free_masks, ref))


def test_budget_with_windows_and_prefix_tokens():
    images = flat_and_noise_images(2, 256, 256, (128, 128))
    tok = PatchTokenizer(
        16, (2, 2, 0.3), token_budget=100, window_size=8, num_prefix_tokens=2)
    layout = tok(images)
    assert layout.tokens_per_image.tolist() == [100, 100]
    assert layout.num_packed == 2 * 102
    assert layout.cu_seqlens_image.tolist() == [0, 102, 204]


@pytest.mark.parametrize('kwargs, match', [
    (dict(keep_ratio=0.0), r'keep_ratio must be in \(0, 1\]'),
    (dict(keep_ratio=1.5), r'keep_ratio must be in \(0, 1\]'),
    (dict(keep_ratio=-0.2), r'keep_ratio must be in \(0, 1\]'),
    (dict(keep_ratio=True), r'keep_ratio must be in \(0, 1\]'),
    (dict(token_budget=0), 'token_budget must be a positive int'),
    (dict(token_budget=12.5), 'token_budget must be a positive int'),
    (dict(token_budget=10, keep_ratio=0.5), 'not both'),
    (dict(threshold_floor=True), 'threshold_floor=True needs budget mode'),
])
def test_bad_budget_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchTokenizer(16, (2, 2, 0.3), **kwargs)


def test_budget_below_minimum_names_it():
    images = flat_and_noise_images(1, 512, 384, (128, 128))
    tok = PatchTokenizer(16, (2, 2, 0.3), token_budget=11, num_prefix_tokens=1)
    with pytest.raises(
            ValueError,
            match=r'token_budget 11 is below the minimum of 12 content '
            r'tokens for 512x384 inputs \(one 128-px patch per cell of the '
            r'4x3 coarsest grid\); the 1 prefix token\(s\) per image come on '
            r'top, 13 in all'):
        tok(images)
    with pytest.raises(ValueError, match=r'use keep_ratio >= 0.01562'):
        PatchTokenizer(16, (2, 2, 0.3), keep_ratio=0.01)(images)
    # The backbone-facing size check raises the same error.
    with pytest.raises(ValueError, match='below the minimum of 12'):
        tok.check_input_size(512, 384)


@pytest.mark.parametrize('pack_size', [None, 'auto', 64])
def test_budget_is_resolved_once_per_call(pack_size, monkeypatch):
    """The size check, the split count, the selection and (token buckets,
    a fixed size) the capped layout share one resolved budget."""
    import mmapt.tokenizer.tokenizer as tokenizer_module
    calls = []
    resolve = tokenizer_module.resolve_budget

    def counted(*args, **kwargs):
        calls.append(args)
        return resolve(*args, **kwargs)

    monkeypatch.setattr(tokenizer_module, 'resolve_budget', counted)
    tokenizer = PatchTokenizer(16, (2, 2), keep_ratio=0.5, pack_size=pack_size)
    images = flat_and_noise_images(2, 128, 128, (64, 64))
    layout = tokenizer(images)
    assert len(calls) == 1
    budget = tokenizer.budget_for(128, 128)  # 0.5 * 64 cells
    assert budget == 32
    assert all(budget - 2 <= n <= budget
               for n in layout.tokens_per_image.tolist())
