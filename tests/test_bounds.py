import math

import pytest

from avops.training.bounds import clopper_pearson_lower, lower_bound, wilson_lower


def test_wilson_matches_a_hand_computation():
    # 8 of 10, z = 1.959964: p=0.8, centre = 0.8 + z^2/20, margin = z*sqrt(0.016 + z^2/400), denom = 1 + z^2/10
    z = 1.959963984540054
    expected = (0.8 + z * z / 20 - z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400)) / (1 + z * z / 10)
    assert wilson_lower(8, 10) == pytest.approx(expected, abs=1e-12)
    assert wilson_lower(8, 10) == pytest.approx(0.4901624, abs=1e-6)


def test_clopper_pearson_matches_known_values():
    # exact bounds: 0/n -> 0; n/n -> (alpha/2)^(1/n); 8/10 -> 0.4439045 (beta.ppf(0.025, 8, 3))
    assert clopper_pearson_lower(0, 10) == 0.0
    assert clopper_pearson_lower(10, 10) == pytest.approx(0.025 ** (1 / 10), abs=1e-9)
    assert clopper_pearson_lower(8, 10) == pytest.approx(0.4439045, abs=1e-6)
    # the defining property, by a direct sum: P(X >= 45 | n=50, p=bound) = 0.025
    b = clopper_pearson_lower(45, 50)
    assert sum(math.comb(50, i) * b**i * (1 - b) ** (50 - i) for i in range(45, 51)) == pytest.approx(0.025, abs=1e-7)


def test_small_slices_get_wide_bounds():
    assert wilson_lower(12, 12) < 0.76 < wilson_lower(120, 120)
    assert clopper_pearson_lower(5, 5) < wilson_lower(5, 5), "the exact bound is the more conservative"


def test_bad_counts_are_rejected():
    with pytest.raises(ValueError):
        wilson_lower(11, 10)
    with pytest.raises(ValueError, match="unknown bound"):
        lower_bound("bayes", 1, 2)
