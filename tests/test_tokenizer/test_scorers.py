"""Patch scorers: the registry, what each score means, the importance rule
and its errors."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import flat_and_noise_images

from mmapt.registry import PATCH_SCORERS
from mmapt.tokenizer import (ContrastScorer, EntropyScorer, GradientScorer,
                             ImportanceScorer, PatchTokenizer, build_scorer,
                             entropy_maps, images_to_gray, scorer_names)
from mmapt.tokenizer.entropy import ENTROPY_BINS


def _gray(batch=2, height=128, width=192, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, generator=gen) * 255


# ------------------------------------------------------------ the registry
def test_registry_lists_and_builds_the_scorers():
    assert {'entropy', 'contrast', 'gradient',
            'importance'} <= set(scorer_names())
    assert PATCH_SCORERS.get('gradient') is GradientScorer
    assert isinstance(build_scorer(None), EntropyScorer)
    assert isinstance(build_scorer('contrast'), ContrastScorer)
    scorer = build_scorer(dict(type='importance', base='gradient', alpha=2))
    assert isinstance(scorer.base, GradientScorer) and scorer.alpha == 2.0
    same = GradientScorer()
    assert build_scorer(same) is same
    # entropy_bins reaches every entropy scorer that does not set bins.
    assert build_scorer('entropy', entropy_bins=64).entropy_bins == 64
    assert build_scorer(
        dict(type='entropy', entropy_bins=8), entropy_bins=64).entropy_bins \
        == 8
    assert build_scorer(
        dict(type='importance'), entropy_bins=32).base.entropy_bins == 32


def test_unknown_scorer_lists_the_registered_ones():
    with pytest.raises(
            ValueError,
            match="unknown patch scorer 'saliency'; registered scorers: "
            'contrast, entropy, gradient, importance'):
        build_scorer('saliency')
    with pytest.raises(ValueError, match='unknown patch scorer'):
        PatchTokenizer(16, (2, ), scorer=dict(type='edges'))
    with pytest.raises(ValueError, match='a dict with a "type"'):
        build_scorer(dict(bins=3))
    with pytest.raises(ValueError, match="patch scorer 'gradient'"):
        build_scorer(dict(type='gradient', bins=3))


# ------------------------------------------------------ what scores mean
def test_entropy_scorer_is_entropy_maps():
    gray = _gray()
    for got, want in zip(
            EntropyScorer(entropy_bins=128)(gray, (32, 64)),
            entropy_maps(gray, (32, 64), 128)):
        assert torch.equal(got, want)


def test_contrast_is_the_patch_std():
    gray = _gray(1, 64, 96)
    for size, got in zip((16, 32), ContrastScorer()(gray, (16, 32))):
        patches = gray.view(1, 64 // size, size, 96 // size, size)
        want = patches.permute(0, 1, 3, 2, 4).reshape(1, 64 // size,
                                                      96 // size, -1).std(
                                                          -1, unbiased=False)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_gradient_is_the_mean_neighbour_difference_inside_patches():
    gray = _gray(1, 32, 64)
    size = 16
    got = GradientScorer()(gray, (size, ))[0]
    for row in range(2):
        for col in range(4):
            patch = gray[0, row * size:(row + 1) * size,
                         col * size:(col + 1) * size]
            diffs = torch.cat([(patch[:, 1:] - patch[:, :-1]).flatten(),
                               (patch[1:] - patch[:-1]).flatten()]).abs()
            torch.testing.assert_close(got[0, row, col], diffs.mean())


def _canonical_patches(size=32):
    """Flat, horizontal ramp (1 gray level / px), a 0/200 step edge, low
    noise (std ~5) and strong noise: one patch each, side by side."""
    gen = torch.Generator().manual_seed(0)
    flat = torch.full((size, size), 120.)
    ramp = torch.arange(size).float().expand(size, size) + 100
    edge = torch.zeros(size, size)
    edge[:, size // 2:] = 200
    low = 120 + 5 * torch.randn(size, size, generator=gen)
    strong = torch.rand(size, size, generator=gen) * 255
    return torch.cat([flat, ramp, edge, low, strong], 1)[None]


def test_scores_of_canonical_patches():
    """What each scorer ranks high: entropy counts gray levels (noise, even
    faint, and ramps score high, a clean edge 1 bit); contrast is std (the
    edge beats faint noise); gradient is neighbour differences (a ramp
    scores 1/2, an edge little, any noise high)."""
    gray = _canonical_patches()
    entropy, = EntropyScorer()(gray, (32, ))
    contrast, = ContrastScorer()(gray, (32, ))
    gradient, = GradientScorer()(gray, (32, ))
    flat, ramp, edge, low, strong = range(5)
    e, c, g = entropy[0, 0], contrast[0, 0], gradient[0, 0]
    assert e[flat] == c[flat] == g[flat] == 0
    assert e[edge] == pytest.approx(1.0)
    assert e[low] > e[edge] and e[ramp] > e[edge]
    assert c[edge] == pytest.approx(100.0)
    assert c[edge] > c[ramp] > c[low] > c[flat]
    assert g[ramp] == pytest.approx(0.5)
    assert g[edge] == pytest.approx(200 / (2 * 31))
    assert g[strong] > g[low] > g[edge] > g[ramp]


def test_gradient_ignores_pairs_across_patch_borders():
    """An edge exactly on a patch border: both patches are flat."""
    gray = torch.zeros(1, 64, 64)
    gray[:, :, 32:] = 255
    assert GradientScorer()(gray, (32, ))[0].abs().max() == 0
    assert ContrastScorer()(gray, (32, ))[0].abs().max() == 0
    assert GradientScorer()(gray, (64, ))[0].item() > 0


def test_every_scorer_gives_the_entropy_map_shapes():
    images = flat_and_noise_images(2, 256, 384, (128, 128))
    importance = torch.rand(2, 256, 384)
    for name in scorer_names():
        scorer = build_scorer(name)
        if name == 'learned':  # refuses to score without loaded weights
            scorer.network.load_state_dict(scorer.network.state_dict())
        tok = PatchTokenizer(16, (2, 2, 0.3), scorer=scorer)
        maps = tok.score_maps(images,
                              importance if name == 'importance' else None)
        assert [tuple(m.shape) for m in maps] == [(2, 8, 12), (2, 4, 6),
                                                  (2, 2, 3)]
        assert all(m.dtype == torch.float32 for m in maps)
        assert all(bool(torch.isfinite(m).all()) for m in maps)


# ------------------------------------------------------ importance maps
def test_importance_multiply_rule():
    gray = _gray(2, 64, 128)
    importance = torch.randn(2, 64, 128)
    base = EntropyScorer()(gray, (16, 32))
    scorer = ImportanceScorer('entropy', alpha=0.5)
    for size, got, ref in zip((16, 32), scorer(gray, (16, 32), importance),
                              base):
        peak = F.max_pool2d(importance[:, None], size)[:, 0]
        want = ref * (1 + 0.5 * peak).clamp(min=0)
        torch.testing.assert_close(got, want)
    # Neutral importance leaves the scores exactly as they are.
    zeros = scorer(gray, (16, 32), torch.zeros(2, 64, 128))
    assert all(torch.equal(a, b) for a, b in zip(zeros, base))


def test_importance_add_rule_and_mean_reduce():
    gray = _gray(1, 64, 64)
    importance = torch.rand(1, 64, 64)
    scorer = ImportanceScorer(
        'contrast', alpha=3, combine='add', reduce='mean')
    got, = scorer(gray, (32, ), importance)
    want = ContrastScorer()(
        gray, (32, ))[0] + 3 * F.avg_pool2d(importance[:, None], 32)[:, 0]
    torch.testing.assert_close(got, want)
    assert scorer.min_score == float('-inf')


def test_importance_moves_tokens_to_the_important_region():
    """Same texture everywhere: with a budget, the tokens go where the map
    says, and the count stays the budget."""
    gen = torch.Generator().manual_seed(0)
    pixels = (120 + 20 * torch.randn(1, 1, 256, 256, generator=gen)).expand(
        1, 3, 256, 256)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    images = (pixels - mean) / std
    importance = torch.zeros(1, 256, 256)
    importance[:, :, :128] = 1.0  # left half important
    tok = PatchTokenizer(
        16, (2, 2, 0.3),
        token_budget=121,
        scorer=dict(type='importance', alpha=1.0))
    layout = tok(images, importance)
    assert layout.tokens_per_image.tolist() == [121]
    left = (layout.col < 8).sum().item()
    assert left > 0.8 * 121
    flipped = tok(images, importance.flip(-1))
    assert (flipped.col >= 8).sum().item() == left


@pytest.mark.parametrize('importance, match', [
    (torch.zeros(2, 128, 96), r'importance map of shape \(2, 128, 96\) does '
     r'not match the images: expected \(2, 128, 192\)'),
    (torch.zeros(1, 128, 192), 'does not match the images'),
    ('map', 'importance must be a'),
])
def test_importance_wrong_size(importance, match):
    images = flat_and_noise_images(2, 128, 192, (64, 64))
    tok = PatchTokenizer(16, (2, ), scorer='importance')
    with pytest.raises(ValueError, match=match):
        tok(images, importance)


def test_importance_nan_and_missing_and_misuse():
    images = flat_and_noise_images(2, 128, 192, (64, 64))
    bad = torch.zeros(2, 128, 192)
    bad[1, 5, 7] = float('nan')
    tok = PatchTokenizer(16, (2, ), scorer='importance')
    with pytest.raises(ValueError, match='contains NaN or inf'):
        tok(images, bad)
    with pytest.raises(
            ValueError, match='needs one importance map per '
            'image'):
        tok(images)
    # (B, 1, H, W) is accepted as well.
    tok(images, torch.zeros(2, 1, 128, 192))
    with pytest.raises(ValueError, match="the scorer is 'entropy'"):
        PatchTokenizer(16, (2, ))(images, torch.zeros(2, 128, 192))
    with pytest.raises(
            ValueError, match="the 'gradient' scorer takes no "
            'importance map'):
        GradientScorer()(images[:, 0], (32, ), torch.zeros(2, 128, 192))


@pytest.mark.parametrize('kwargs, match', [
    (dict(alpha=-1), 'alpha must be a finite number >= 0'),
    (dict(alpha=float('nan')), 'alpha must be a finite number >= 0'),
    (dict(combine='max'), "combine must be 'multiply' or 'add'"),
    (dict(reduce='median'), "reduce must be 'max' or 'mean'"),
    (dict(base=dict(type='importance')), 'cannot wrap another importance'),
])
def test_importance_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_scorer(dict(type='importance', **kwargs))


# ------------------------------------------------ tokenizer integration
def test_entropy_bins_is_the_one_name():
    tok = PatchTokenizer(16, (2, ), entropy_bins=64)
    assert tok.entropy_bins == 64 and tok.scorer.entropy_bins == 64
    assert PatchTokenizer(16, (2, )).scorer.entropy_bins == ENTROPY_BINS
    with pytest.raises(TypeError, match='num_bins'):
        PatchTokenizer(16, (2, ), num_bins=64)  # never a config's spelling
    # A config's scorer=dict(type='entropy', bins=...) still works, warned.
    with pytest.warns(DeprecationWarning, match='use entropy_bins'):
        scorer = build_scorer(dict(type='entropy', bins=32), 64)
    assert scorer.entropy_bins == 32
    with pytest.raises(ValueError, match='entropy_bins must be a positive'):
        EntropyScorer(entropy_bins=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        # The third positional argument is entropy_bins, silently.
        assert PatchTokenizer(16, (2, ), 128).entropy_bins == 128


def test_scorer_layouts_differ_and_threshold_units():
    """Each scorer's thresholds are in its own unit: contrast 0.5 merges
    only (near) flat patches, like entropy 0.5."""
    images = flat_and_noise_images(2, 256, 256, (128, 128))
    layouts = {
        name: PatchTokenizer(16, (0.5, 0.5, 0.5), scorer=name)(images)
        for name in ('entropy', 'contrast', 'gradient')
    }
    counts = {n: lay.tokens_per_image.tolist() for n, lay in layouts.items()}
    assert counts['entropy'] == counts['contrast'] == counts['gradient']
    assert counts['entropy'][0] < 256
    gray = images_to_gray(images, (123.675, 116.28, 103.53),
                          (58.395, 57.12, 57.375))
    assert ContrastScorer()(gray, (128, ))[0][0, 0, 0] < 1e-3
