"""Change from the participant's own baseline and whether it is reliable (Jacobson & Truax
1991, J Consult Clin Psychol 59:12): RCI = (x - baseline) / S_diff, where
S_diff = sqrt(2 * SE^2) and SE = SD * sqrt(1 - r), with the test-retest reliability r and SD
the metric's module version declares. |RCI| > 1.96 is a reliable change (p < .05, two-sided);
whether it is an improvement depends on the metric's direction (higher is worse for reaction
times and symptom totals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CRITICAL = 1.96
IMPROVED = "RC+"  # reliable improvement
WORSENED = "RC-"  # reliable deterioration


@dataclass(frozen=True)
class Change:
    delta: float
    rci: float | None
    mark: str  # IMPROVED, WORSENED or "" (not reliable, or no reliability declared)


def s_diff(reliability: dict[str, Any]) -> float:
    se = float(reliability["sd"]) * math.sqrt(1.0 - float(reliability["test_retest_r"]))
    return math.sqrt(2.0 * se * se)


def change(value: float, baseline: float, metric: dict[str, Any]) -> Change:
    delta = value - baseline
    reliability = metric.get("reliability")
    if not reliability:
        return Change(delta, None, "")
    rci = delta / s_diff(reliability)
    mark = ""
    higher_is_better = metric.get("higher_is_better")
    if abs(rci) > CRITICAL and higher_is_better is not None:
        mark = IMPROVED if (rci > 0) == higher_is_better else WORSENED
    return Change(delta, rci, mark)
