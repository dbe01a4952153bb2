"""Token buckets and the overflow rule of the static-shape mode: a batch
takes the smallest bucket that holds it (one host read); a batch larger
than its bucket is capped by score, never NaN, and a batch that fits gives
exact packing's outputs."""
import pytest
import torch

from mmapt.benchmark.overhead import count_overhead
from mmapt.models import APTEVA02, APTViT
from mmapt.tokenizer import PatchTokenizer, select_patches
from mmapt.tokenizer.budget import capped_splits, fit_patches, min_tokens
from mmapt.tokenizer.layout import (check_pack_size_spec, choose_pack_size,
                                    default_pack_sizes, max_pack_size)

TINY = dict(embed_dims=32, num_layers=2, num_heads=1)
CFG = dict(
    img_size=256,
    patch_size=16,
    window_size=4,
    global_attn_indexes=(1, ),
    out_indices=(0, 1),
    thresholds=(2, 2))
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
BAD = [0, -1, True, 1.5, [], ['a'], [0, 8], 'big', (4, None)]


def _pair(cls=APTEVA02, pack_size=None, **kwargs):
    """A static-mode model and an exact one with the same weights."""
    torch.manual_seed(0)
    arch = dict(TINY, scale_mlp=False) if cls is APTEVA02 else TINY
    cfg = dict(arch=arch, **CFG, **kwargs)
    static = cls(pack_size=pack_size, **cfg).eval()
    exact = cls(**cfg).eval()
    exact.load_state_dict(static.state_dict())
    return static, exact


def _images(kinds, size=256, seed=0):
    """Normalised images: 'flat' (one colour: the coarsest layout) or
    'noise' (uniform noise: every base token)."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(len(kinds), 3, size, size, generator=gen) * 255
    for i, kind in enumerate(kinds):
        if kind == 'flat':
            pixels[i] = 90.
    return (pixels - MEAN) / STD


# ------------------------------------------------------------ the settings
@pytest.mark.parametrize('value', BAD)
def test_bad_pack_size_refused_when_set(value):
    with pytest.raises(
            ValueError,
            match='pack_size=.* is not valid: use '
            'None .* positive int .* list of positive ints .* '
            "'auto'"):
        _pair(pack_size=value)
    model = _pair()[0]
    with pytest.raises(ValueError, match=r'is not valid'):
        model.apt.pack_size = value
    assert model.apt.pack_size is None  # unchanged
    with pytest.raises(ValueError, match=r'is not valid'):
        PatchTokenizer(pack_size=value)


def test_good_pack_sizes_kept_in_order():
    assert check_pack_size_spec([600, 200, 200]) == (200, 600)
    assert check_pack_size_spec((300, )) == (300, )
    assert check_pack_size_spec('auto') == 'auto'
    assert check_pack_size_spec(None) is None
    model = _pair(pack_size=[600, 200])[0]
    assert model.apt.pack_size == (200, 600)
    assert model.apt.pack_sizes(2, 256, 256) == (200, 600)
    model.apt.pack_size = 300
    assert model.apt.pack_sizes(2, 256, 256) == (300, )
    model.apt.pack_size = None
    assert model.apt.pack_sizes(2, 256, 256) is None


def test_default_buckets():
    # 16 x 16 grid, one prefix token, batch 2: 25/50/75% rounded up to 64.
    assert default_pack_sizes(2, (16, 16), 1) == (192, 320, 448, 514)
    for batch, grid, prefix in [(1, (96, 96), 0), (4, (16, 16), 0),
                                (3, (8, 24), 5), (1, (2, 2), 0)]:
        sizes = default_pack_sizes(batch, grid, prefix)
        assert list(sizes) == sorted(set(sizes))
        # The 100% bucket holds the plain grid: it never overflows.
        assert sizes[-1] == max_pack_size(batch, grid, prefix)
        cells = grid[0] * grid[1]
        assert sizes[0] >= batch * (cells // 4 + prefix)
    model = _pair(pack_size='auto')[0]
    assert model.apt.pack_sizes(2, 256,
                                512) == default_pack_sizes(2, (16, 32), 0)


def test_choose_pack_size():
    assert choose_pack_size(100, (64, 128, 256)) == 128
    assert choose_pack_size(128, (64, 128, 256)) == 128
    assert choose_pack_size(64, (256, 64)) == 64
    assert choose_pack_size(300, (64, 128, 256)) == 256  # none fits
    with pytest.raises(ValueError, match='at least one bucket'):
        choose_pack_size(1, ())


# --------------------------------------------------- bucket choice, reads
def test_select_pack_size_smallest_that_fits_one_read():
    model = _pair(pack_size=[100, 300, 600])[0]
    flat, noisy = _images(['flat', 'flat']), _images(['flat', 'noise'])
    # 16 + 16 tokens; 16 + 256.
    assert model.apt.select_pack_size(flat) == 100
    assert model.apt.select_pack_size(noisy) == 300
    assert model.apt.select_pack_size(noisy, buckets=[50, 250]) == 250
    assert model.apt.select_pack_size(noisy, buckets=[272, 900]) == 272
    counts = count_overhead(lambda: model.apt.select_pack_size(noisy))
    assert counts.total_syncs == 1, counts.sync_sites
    # One bucket: nothing to read.
    counts = count_overhead(
        lambda: model.apt.select_pack_size(noisy, buckets=[400]))
    assert counts.total_syncs == 0
    # Exact mode: the 'auto' buckets of the batch.
    model.apt.pack_size = None
    assert model.apt.select_pack_size(noisy) == default_pack_sizes(
        2, (16, 16), 0)[2]


@pytest.mark.parametrize('cls, kwargs',
                         [(APTEVA02, {}),
                          (APTViT, dict(num_register_tokens=2))])
def test_buckets_forward_equals_exact_one_read(cls, kwargs):
    static, exact = _pair(cls, pack_size='auto', **kwargs)
    prefix = static.num_prefix_tokens
    with torch.no_grad():
        for kinds in (['flat', 'flat'], ['flat', 'noise'], ['noise', 'noise']):
            x = _images(kinds)
            layout = static.tokenize(x)
            want = default_pack_sizes(2, (16, 16), prefix)
            assert layout.num_packed == choose_pack_size(
                layout.num_real_packed, want)
            assert not bool(layout.capped)
            for a, b in zip(static(x), exact(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            counts = count_overhead(lambda: static(x), model=static)
            assert counts.total_syncs == 1, counts.sync_sites
            assert counts.syncs.get('tokenizer') == 1
    # forward_static at a given size: no read, same maps.
    x = _images(['flat', 'noise'])
    with torch.no_grad():
        counts = count_overhead(
            lambda: static.apt.forward_static(x, None, 600), model=static)
        assert counts.total_syncs == 0, counts.sync_sites
        for a, b in zip(static.apt.forward_static(x, None, 600), exact(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------- overflow rule
@pytest.mark.parametrize('pack_size', [300, [120, 300]])
def test_overflow_capped_finite_and_exact_where_it_fits(pack_size):
    """flat + noise + noise wants 16 + 256 + 256 tokens; 300 cannot hold
    them: the noise images share what the flat one leaves."""
    static, exact = _pair(pack_size=pack_size)
    x = _images(['flat', 'noise', 'noise'])
    with torch.no_grad():
        layout = static.tokenize(x)
        outs, want = static(x), exact(x)
    assert bool(layout.capped) and not bool(layout.overflow)
    assert layout.num_packed == 300 and layout.num_real_packed <= 300
    # Water filling: the flat image keeps its own 16 tokens, the noise ones
    # split the 284 left (16 + 3 * 42 each = 142), highest entropy first.
    assert layout.tokens_per_image.tolist() == [16, 142, 142]
    for a, b in zip(outs, want):
        assert bool(a.isfinite().all())
        # Images attend only within themselves: the uncapped one is exact.
        torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(a[1:], b[1:], atol=1e-3)
    # The same batch without its overflow: exact.
    fits = x[:1]
    with torch.no_grad():
        assert not bool(static.tokenize(fits).capped)
        for a, b in zip(static(fits), exact(fits)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_overflow_gradients_finite():
    static, _ = _pair(pack_size=200)
    static.train()
    x = _images(['noise', 'noise'], seed=1)
    out = static(x)
    assert bool(static.tokenize(x).capped)
    out[-1].square().mean().backward()
    grads = [p.grad for p in static.parameters() if p.grad is not None]
    assert grads and all(bool(g.isfinite().all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


def test_overflow_in_budget_mode():
    """keep_ratio=0.5 wants 128 tokens per image; 200 holds 100 each."""
    static, exact = _pair(pack_size=200, keep_ratio=0.5)
    x = _images(['noise', 'flat'], seed=2)
    with torch.no_grad():
        layout = static.tokenize(x)
        assert bool(layout.capped)
        assert layout.tokens_per_image.tolist() == [100, 100]
        assert all(bool(o.isfinite().all()) for o in static(x))
        static.apt.pack_size = 256  # holds 2 x 127: exact
        assert not bool(static.tokenize(x).capped)
        for a, b in zip(static(x), exact(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_token_report_counts_capped_calls():
    from mmapt.models.backbones import count_tokens
    static, _ = _pair(pack_size=300)
    with torch.no_grad(), count_tokens(static) as counter:
        static(_images(['flat', 'noise', 'noise']))
        static(_images(['flat', 'flat', 'flat']))
    stats = counter.per_image()
    assert stats['calls'].item() == 2 and stats['capped'].item() == 1
    assert stats['tokens'].tolist() == [32, 16 + 142, 16 + 142]
    # Exact mode reports no capped calls.
    static.apt.pack_size = None
    with torch.no_grad(), count_tokens(static) as counter:
        static(_images(['noise']))
    assert counter.per_image()['capped'].item() == 0


# ------------------------------------------------ the rule, on any scores
def _random_scores(batch, grid, num_scales, seed):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.rand(batch, grid[0] >> s, grid[1] >> s, generator=gen) * 4
        for s in range(1, num_scales)
    ]


@pytest.mark.parametrize('seed', range(6))
def test_fit_patches_fits_and_keeps_what_fits(seed):
    grid, thresholds, batch = (16, 24), (2., 2., 0.5), 3
    scores = _random_scores(batch, grid, 4, seed)
    wanted = select_patches(scores, thresholds, grid)
    tokens = sum(m.flatten(1).sum(1) for m in wanted)
    least = min_tokens(grid, 4)
    for content in (batch * least,
                    int(tokens.sum()) // 2, int(tokens.sum()) - 1,
                    int(tokens.sum()), batch * grid[0] * grid[1]):
        masks, capped = fit_patches(scores, grid, content, thresholds)
        got = sum(m.flatten(1).sum(1) for m in masks)
        assert int(got.sum()) <= content
        assert bool(capped) == (int(tokens.sum()) > content)
        # Every cell covered by exactly one token.
        cover = sum(
            m.repeat_interleave(1 << s, 1).repeat_interleave(1 << s, 2).long()
            for s, m in enumerate(masks))
        assert bool((cover == 1).all())
        for i in range(batch):
            if not bool(capped) or int(got[i]) == int(tokens[i]):
                for m, w in zip(masks, wanted):
                    assert torch.equal(m[i], w[i])
            else:  # capped images: fewer tokens, never more
                assert int(got[i]) < int(tokens[i])
        if bool(capped):  # the whole share is spent (within a split each)
            assert content - int(got.sum()) < 3 * batch


def test_capped_splits_water_filling():
    splits = torch.tensor([10, 2, 30, 5])
    assert capped_splits(splits, 100).tolist() == [10, 2, 30, 5]
    assert capped_splits(splits, 47).tolist() == [10, 2, 30, 5]
    assert capped_splits(splits, 20).tolist() == [7, 2, 6, 5]
    assert capped_splits(splits, 0).tolist() == [0, 0, 0, 0]
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        splits = torch.randint(0, 50, (5, ), generator=gen)
        total = int(torch.randint(0, 250, (1, ), generator=gen))
        got = capped_splits(splits, total)
        assert bool((got <= splits).all())
        assert int(got.sum()) == min(total, int(splits.sum()))
        # Fair: a capped image gets at least any other image's share - 1.
        held = got < splits
        if bool(held.any()):
            assert int(got[held].min()) >= int(got.max()) - 1


def test_capping_compiles_whole_and_exports():
    """The cap is device-side: one fullgraph graph serves batches that fit
    and batches that overflow, and an exported program matches eager."""
    static, _ = _pair(pack_size=300)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(static, fullgraph=True, backend=backend)
    fits, overflows = _images(['flat', 'flat',
                               'noise']), _images(['flat', 'noise', 'noise'])
    with torch.no_grad():
        for x in (fits, overflows):
            for a, b in zip(compiled(x), static(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        program = torch.export.export(static, (fits, ))
        for a, b in zip(program.module()(overflows), static(overflows)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(graphs) == 1


@pytest.mark.parametrize('cls, kwargs, keep',
                         [(APTEVA02, {}, 0.5), (APTEVA02, {}, 0.77),
                          (APTViT, dict(num_register_tokens=2), 0.6)])
def test_auto_in_budget_mode_is_the_one_bucket_every_batch_fills(
        cls, kwargs, keep):
    """Budget mode: every image has the same count, so 'auto' is one
    bucket (the count rounded up to 64), not the 25/50/75/100% ladder
    (keep 0.77 would run the 100% rung): no host read, never capped, the
    outputs of exact packing; threshold mode keeps the ladder."""
    static, exact = _pair(cls, pack_size='auto', keep_ratio=keep, **kwargs)
    prefix = static.num_prefix_tokens
    tokenizer = static.apt.tokenizer
    fixed = tokenizer.budget_packed_tokens(2, (16, 16))
    assert static.apt.pack_sizes(2, 256, 256) == (-(-fixed // 64) * 64, )
    with torch.no_grad():
        for kinds in (['flat', 'noise'], ['noise', 'noise']):
            x = _images(kinds)
            layout = static.tokenize(x)
            assert int(layout.num_real_packed) == fixed
            assert fixed <= 2 * (int(keep * 256) + prefix)
            assert layout.num_packed == -(-fixed // 64) * 64
            assert not bool(layout.capped)
            for a, b in zip(static(x), exact(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            counts = count_overhead(lambda: static(x), model=static)
            assert counts.total_syncs == 0, counts.sync_sites
    # Threshold mode: the ladder, no fixed count.
    thresholds = _pair(cls, pack_size='auto', **kwargs)[0]
    assert thresholds.apt.tokenizer.budget_packed_tokens(2, (16, 16)) is None
    assert thresholds.apt.pack_sizes(2, 256, 256) == default_pack_sizes(
        2, (16, 16), prefix)
