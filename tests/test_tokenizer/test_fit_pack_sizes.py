"""Token buckets fitted to calibration counts: exact (equal to a brute
force over every bucket set), the canvas's maximum always the largest."""
import itertools
import random

import pytest

from mmapt.tokenizer.layout import (choose_pack_size, default_pack_sizes,
                                    fit_pack_sizes)


def tokens_run(counts, buckets):
    return sum(choose_pack_size(c, buckets) for c in counts)


def brute_force(counts, num_buckets, largest, multiple=64):
    """Fewest tokens run over every set of at most K - 1 buckets (each a
    count rounded up to ``multiple``) plus ``largest``."""
    candidates = sorted({-(-c // multiple) * multiple
                         for c in counts} - {largest})
    candidates = [c for c in candidates if c < largest]
    best = tokens_run(counts, (largest, ))
    for r in range(1, num_buckets):
        for chosen in itertools.combinations(candidates, r):
            best = min(best, tokens_run(counts, chosen + (largest, )))
    return best


def test_matches_brute_force_on_random_counts():
    rng = random.Random(0)
    for _ in range(200):
        largest = rng.choice([577, 1024, 9216, 9217])
        counts = [rng.randint(1, largest) for _ in range(rng.randint(1, 10))]
        k = rng.randint(1, 5)
        fitted = fit_pack_sizes(counts, k, largest)
        assert fitted[-1] == largest and len(fitted) <= k
        assert list(fitted) == sorted(set(fitted))
        assert all(size % 64 == 0 for size in fitted[:-1])
        assert tokens_run(counts, fitted) == brute_force(counts, k, largest)


def test_known_answer_and_the_other_multiple():
    # Two clusters: one bucket each, at the cluster's largest count
    # rounded up; the canvas maximum last.
    counts = [6186, 6183, 6230, 8100, 8406]
    assert fit_pack_sizes(counts, 3, 9216) == (6272, 8448, 9216)
    assert fit_pack_sizes(counts, 3, 9216, multiple=1) == (6230, 8406, 9216)
    assert fit_pack_sizes(counts, 1, 9216) == (9216, )
    # K above the distinct counts: fewer buckets, each count exact.
    assert fit_pack_sizes([100, 100, 200], 5, 577) == (128, 256, 577)


def test_never_worse_than_auto_on_its_own_counts():
    counts = [8406, 7212, 6186, 6183, 8100, 8865]
    auto = default_pack_sizes(1, (96, 96))
    fitted = fit_pack_sizes(counts, len(auto), auto[-1])
    assert fitted[-1] == auto[-1]
    assert tokens_run(counts, fitted) < tokens_run(counts, auto)
    # A count that rounds up to the largest runs there, as with any set.
    assert fit_pack_sizes([9200], 4, 9216) == (9216, )


@pytest.mark.parametrize('k', [0, -1, 1.5, True, None])
def test_refuses_a_bad_number_of_buckets(k):
    with pytest.raises(ValueError, match='number of buckets must be an int'):
        fit_pack_sizes([100], k, 577)


def test_refuses_no_counts_and_counts_beyond_the_canvas():
    with pytest.raises(ValueError, match='at least one calibration image'):
        fit_pack_sizes([], 2, 577)
    with pytest.raises(ValueError, match=r'in \[1, 577\].*canvas'):
        fit_pack_sizes([100, 600], 2, 577)
    with pytest.raises(ValueError, match='multiple must be >= 1'):
        fit_pack_sizes([100], 2, 577, multiple=0)
