"""The statistics the scorers share: plain functions over lists of numbers, None when empty.

SD is the sample SD (n - 1 in the denominator), None below two values: what R's sd(), numpy's
std(ddof=1) and SPSS report, so a researcher checking a number by hand gets the same one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# Responses faster than this cannot have been driven by the stimulus (anticipations): the usual
# floor in the RT literature (Whelan 2008, "Effective analysis of reaction time data",
# Psychological Record 58:475-482; Luce 1986).
ANTICIPATION_FLOOR_MS = 100.0
# After the floor, a response slower than mean + 3 SD of the remaining responses is dropped, in
# one pass (Ratcliff 1993, "Methods for dealing with reaction time outliers", Psychological
# Bulletin 114:510-532, compares such cutoffs; 3 SD is the most common in published work).
TRIM_SD = 3.0

_NORMAL = statistics.NormalDist()


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def sd(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def proportion(hits: int, total: int) -> float | None:
    return hits / total if total else None


def trim_rts(rts: Sequence[float]) -> list[float]:
    """Drop anticipations (< ANTICIPATION_FLOOR_MS), then responses above mean + TRIM_SD SD
    of what is left (one pass). Fewer than three left after the floor: nothing more dropped,
    an SD of two values says nothing about outliers."""
    kept = [rt for rt in rts if rt >= ANTICIPATION_FLOOR_MS]
    if len(kept) < 3:
        return kept
    m, s = mean(kept), sd(kept)
    assert m is not None and s is not None
    ceiling = m + TRIM_SD * s
    return [rt for rt in kept if rt <= ceiling]


def loglinear_rate(count: int, total: int) -> float:
    """The log-linear correction (Hautus 1995, Behavior Research Methods 27:46-51):
    (count + 0.5) / (total + 1). Used, as the CPT module defines d', only for rates of 0 or 1,
    where z would be infinite."""
    return (count + 0.5) / (total + 1)


def d_prime(hits: int, targets: int, false_alarms: int, non_targets: int) -> float | None:
    """z(hit rate) - z(false-alarm rate); None without targets or without non-targets."""
    if not targets or not non_targets:
        return None
    hit_rate = hits / targets
    fa_rate = false_alarms / non_targets
    if hit_rate in (0.0, 1.0):
        hit_rate = loglinear_rate(hits, targets)
    if fa_rate in (0.0, 1.0):
        fa_rate = loglinear_rate(false_alarms, non_targets)
    return _NORMAL.inv_cdf(hit_rate) - _NORMAL.inv_cdf(fa_rate)
