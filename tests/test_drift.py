"""The drift engine: D and p-values equal to scipy's ks_2samp; BH over columns; effect and sample-size floors."""

import numpy as np
import pytest
from scipy import stats

from avops.drift.ks import DriftPolicy, Reference, _right_ranks, detect_drift, ks_pvalue, ks_statistic
from avops.drift.smirnov import kstwo_sf, smirnov_sf


@pytest.mark.parametrize("n1,n2", [(50, 80), (3000, 7000), (20_000, 15_000)])
def test_statistic_and_pvalue_equal_scipy_including_ties(n1, n2):
    rng = np.random.default_rng(n1)
    ref = np.round(rng.normal(0, 1, n1), 1)  # rounded: many ties, the hard case for ECDF code
    cur = np.round(rng.normal(0.1, 1.1, n2), 1)
    r = Reference.build({"x": ref})
    raw_d = ks_statistic(r.values["x"], r.ranks["x"], cur)
    p, method, d = ks_pvalue(raw_d, n1, n2, r.values["x"], cur)
    expected = stats.ks_2samp(ref, cur)
    assert method == ("exact" if max(n1, n2) <= 10_000 else "asymp")
    assert d == expected.statistic, "bit-identical statistic"
    # the p-value: scipy's own where scipy is cheap; where it sums the exact one-sided tail, our
    # windowed sum of the same terms agrees to rounding (avops.drift.smirnov)
    assert p == pytest.approx(expected.pvalue, rel=1e-12, abs=0.0)
    assert raw_d == pytest.approx(expected.statistic, abs=1e-15), "exact mode snaps D to its lattice; ours is the unsnapped value"


def test_kstwo_sf_equals_scipy_in_every_branch():
    """Every regime of scipy's ``kstwo.sf``: small n, tiny and huge statistics, the exact-sum band, n > 1e6."""
    rng = np.random.default_rng(11)
    checked = fast = 0
    for n in [50, 140, 141, 1012, 1013, 8571, 60_000, 499_999, 1_000_000, 1_000_001, 3_000_000]:
        for d in np.concatenate([rng.uniform(np.sqrt(2.2 / n), min(0.49, np.sqrt(369.0 / n)), 6 if n < 100_000 else 1),
                                 [0.3 / n, 0.9 / n, np.sqrt(1.0 / n), np.sqrt(19.0 / n), 0.5, 0.97]]):
            ours, theirs = kstwo_sf(float(d), float(n)), float(stats.kstwo.sf(d, n))
            assert ours == pytest.approx(theirs, rel=1e-11, abs=1e-300), (n, d)
            checked += 1
            fast += 1013 <= n <= 1_000_000 and 2.2 <= n * d * d < 370
    assert checked == 112 and fast >= 25, "the fast branch was exercised"


def test_the_windowed_tail_sum_matches_a_40_digit_computation():
    """Independent of scipy: the Birnbaum–Tingey sum in mpmath, every term, at n = 20,000."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    n, d = 20_000, mpmath.mpf("0.031")
    total = mpmath.fsum(mpmath.binomial(n, v) * (d + mpmath.mpf(v) / n) ** (v - 1) * (1 - d - mpmath.mpf(v) / n) ** (n - v)
                        for v in range(int(n * (1 - d)) + 1)) * d
    assert smirnov_sf(n, 0.031) == pytest.approx(float(total), rel=1e-12)


def test_right_ranks_are_searchsorted_right():
    v = np.sort(np.array([3.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0]))
    assert _right_ranks(v).tolist() == np.searchsorted(v, v, side="right").tolist()
    assert _right_ranks(np.zeros(0)).tolist() == []


def test_no_drift_on_two_samples_of_one_distribution_at_the_configured_rate():
    rng = np.random.default_rng(7)
    flagged = 0
    for trial in range(20):
        cols = {f"c{i}": rng.normal(0, 1, 2000) for i in range(10)}
        ref = Reference.build(cols)
        cur = {f"c{i}": rng.normal(0, 1, 2000) for i in range(10)}
        flagged += sum(c.drifted for c in detect_drift(ref, cur, DriftPolicy(alpha=0.05, min_effect=0.0)))
    assert flagged <= 3, f"{flagged} false alarms in 200 null column tests at FDR 0.05"


def test_a_small_shift_in_a_large_sample_is_found_and_a_meaningless_one_is_not():
    rng = np.random.default_rng(1)
    n = 200_000
    ref = Reference.build({"brake_temp": rng.normal(0, 1, n), "wheel_slip": rng.normal(0, 1, n), "soc": rng.normal(0, 1, n)})
    cur = {"brake_temp": rng.normal(0.05, 1, n), "wheel_slip": rng.normal(0.005, 1, n), "soc": rng.normal(0, 1, n)}
    res = {c.column: c for c in detect_drift(ref, cur, DriftPolicy(alpha=0.01, min_effect=0.01))}
    assert res["brake_temp"].drifted and res["brake_temp"].method == "asymp"
    assert not res["soc"].drifted
    small = res["wheel_slip"]
    assert not small.drifted and ("small" in small.reason or "not significant" in small.reason), small.reason
    few = detect_drift(ref, {"brake_temp": rng.normal(3, 1, 50)}, DriftPolicy(min_samples=200))[0]
    assert not few.drifted and "too few values" in few.reason
    # the adjusted p-values are scipy's Benjamini–Hochberg over the tested columns
    raw = [res[c].pvalue for c in ("brake_temp", "wheel_slip", "soc")]
    assert [res[c].pvalue_adjusted for c in ("brake_temp", "wheel_slip", "soc")] == pytest.approx(
        stats.false_discovery_control(raw, method="bh").tolist())


def test_a_reference_round_trips_through_bytes_and_ignores_non_finite_values():
    ref = Reference.build({"a": np.array([1.0, np.nan, 2.0, np.inf, 2.0])}, meta={"model": "perception", "version": 3})
    back = Reference.from_bytes(ref.to_bytes())
    assert back.values["a"].tolist() == [1.0, 2.0, 2.0] and back.ranks["a"].tolist() == [1, 3, 3]
    assert back.meta == {"model": "perception", "version": 3}
