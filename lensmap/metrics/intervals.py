"""Confidence intervals for proportions: the Wilson score interval.

``wilson(k, n)`` is the 95 % (by default) Wilson interval of ``k`` successes in ``n`` trials:
unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0 or n
successes, which matters for the small per-cell ``n`` of the evaluation (5–40 items).
"""

from __future__ import annotations

import math
from statistics import NormalDist


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """``(low, high)`` of the Wilson score interval; ``(nan, nan)`` when ``n`` is 0."""
    if n == 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"k={k} successes is outside 0..n={n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    if k == 0:  # exact ends: rounding must not leave 1e-17 where the interval touches 0 or 1
        return 0.0, min(1.0, centre + half)
    if k == n:
        return max(0.0, centre - half), 1.0
    return max(0.0, centre - half), min(1.0, centre + half)
