"""Worst-case (lower) confidence bounds for a proportion such as recall on a slice.

A gate on a point estimate passes a model that got lucky on 12 night frames. Gates
compare the lower end of a 95% interval instead, so a small slice must do very well
(or grow) to pass. Both bounds are computed exactly here, without scipy.
"""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """Wilson score interval, lower end (two-sided ``confidence``). 0 when n == 0."""
    _check(successes, n)
    if n == 0:
        return 0.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / denom)


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space for stability."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k, n + 1)]
    m = max(terms)
    return min(1.0, math.exp(m) * sum(math.exp(t - m) for t in terms))


def clopper_pearson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """Exact (Clopper–Pearson) lower bound: the p at which P(X >= k) = (1 - confidence) / 2."""
    _check(successes, n)
    if n == 0 or successes == 0:
        return 0.0
    alpha = (1 - confidence) / 2
    lo, hi = 0.0, successes / n
    for _ in range(100):  # bisection: P(X >= k | p) increases with p
        mid = (lo + hi) / 2
        if _binom_sf(successes, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def lower_bound(method: str, successes: int, n: int, confidence: float = 0.95) -> float:
    if method == "wilson":
        return wilson_lower(successes, n, confidence)
    if method in ("clopper_pearson", "clopper-pearson", "exact"):
        return clopper_pearson_lower(successes, n, confidence)
    raise ValueError(f"unknown bound {method!r}: use wilson or clopper_pearson")


def _check(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
