"""The one percentile definition behind every percentile and median in the benchmark reports.

``percentile(values, p)`` is linear interpolation between the closest ranks (Hyndman & Fan
type 7; numpy's default, ``statistics.quantiles(method="inclusive")``): sort the ``n`` values
into ``x[0] <= … <= x[n-1]``, take the rank ``h = (n - 1) * p / 100`` and return
``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``. So ``p = 0`` is the
minimum, ``p = 100`` the maximum and ``p = 50`` the median (the mean of the two middle values
when ``n`` is even). With few samples a high percentile lies between the largest values: the
p99 of 300 samples interpolates between the 297th and the 298th smallest (1-based).

Percentiles printed by wrk and ab are theirs (wrk: from its latency histogram; ab: whole
milliseconds from its own table) and are reported as those tools give them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0 <= p <= 100) of ``values`` as defined above; ValueError if empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    x = sorted(values)
    if not x:
        raise ValueError("percentile of no values")
    h = (len(x) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def latency_summary(values: Sequence[float], points: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """``n``, ``min``, ``p<k>`` for each of ``points``, ``max`` and ``mean`` of ``values``;
    ``{"n": 0}`` for no values."""
    if not values:
        return {"n": 0}
    x = sorted(values)
    out: dict[str, float] = {"n": len(x), "min": x[0]}
    out.update({f"p{k}": percentile(x, k) for k in points})
    out.update({"max": x[-1], "mean": sum(x) / len(x)})
    return out


def cdf(values: Sequence[float], points: int = 101) -> list[float]:
    """``points`` percentiles evenly spaced from 0 to 100 (a latency CDF for plotting)."""
    if not values:
        return []
    x = sorted(values)
    return [percentile(x, 100 * i / (points - 1)) for i in range(points)]
