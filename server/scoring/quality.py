"""Data-quality rules: pure checks on a task's trials and on a session, each with its key,
version, the thresholds it used and the value it observed.

Thresholds resolve in this order, later winning: the rule's default, the module's default
(MODULE_DEFAULTS), the study's setting for every module ("*"), the study's setting for the
module. Changing what a rule computes means a new version in RULE_VERSIONS.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

Thresholds = dict[str, float]
# {module_key or "*": {rule: {param: value}}}: a study's settings.
Overrides = Mapping[str, Mapping[str, Mapping[str, float]]]

DEFAULTS: dict[str, Thresholds] = {
    # Share of answered trials faster than floor_ms (or flagged anticipations by the client).
    "anticipations": {"floor_ms": 100.0, "max_share": 0.10},
    # Share of trials without a response (CPT: of target trials).
    "omissions": {"max_share": 0.20},
    # Longest time between two stimulus onsets.
    "long_gap": {"max_gap_ms": 30_000.0},
    # Median RT below this looks like seconds sent as milliseconds.
    "rt_units": {"max_median_ms": 10.0},
    # Every answer the same code, over at least min_items answers.
    "straight_lining": {"min_items": 5.0},
    # Summary metrics where the client and the server disagree.
    "summary_mismatch": {"max_mismatches": 0.0},
    # Focus-lost / app-backgrounded events the client reported.
    "focus_loss": {"max_events": 0.0},
    # Client clock against the server's receipt: each submission's client_submitted_at, and a
    # session start the device dates after the server received it.
    "clock_drift": {"max_drift_s": 300.0},
    # Session length (client end - client start) against the battery's norm (sum of modules').
    "duration": {"min_ratio": 0.5, "max_ratio": 2.0},
    # Battery modules with no submitted task.
    "incomplete_battery": {"max_missing": 0.0},
}
RULE_VERSIONS: dict[str, str] = {rule: "1" for rule in DEFAULTS}
# Typical durations in seconds of the built-ins, the `duration` rule's norm (norm_s).
MODULE_DEFAULTS: dict[str, dict[str, Thresholds]] = {
    "simple_rt": {"duration": {"norm_s": 180.0}},
    "choice_rt": {"duration": {"norm_s": 240.0}},
    "cpt": {"duration": {"norm_s": 480.0}},
    "digit_span": {"duration": {"norm_s": 300.0}},
    "mood9": {"duration": {"norm_s": 120.0}, "straight_lining": {"min_items": 5.0}},
}
PARAMS: dict[str, frozenset[str]] = {
    rule: frozenset(params) | ({"norm_s"} if rule == "duration" else set())
    for rule, params in DEFAULTS.items()
}
FOCUS_EVENTS = frozenset({"focus_lost", "app_backgrounded"})


@dataclass(frozen=True)
class Check:
    rule: str
    scope: str  # "task" or "session"
    threshold: Thresholds
    observed: float | None
    fired: bool
    module_key: str | None = None
    position: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rule_version(self) -> str:
        return RULE_VERSIONS[self.rule]


def thresholds(rule: str, module_key: str | None, overrides: Overrides) -> Thresholds:
    resolved = dict(DEFAULTS[rule])
    for source in (
        MODULE_DEFAULTS.get(module_key or "", {}),
        overrides.get("*", {}),
        overrides.get(module_key or "", {}),
    ):
        resolved |= source.get(rule, {})
    return resolved


@dataclass(frozen=True)
class TaskFacts:
    module_key: str
    position: int
    questionnaire: bool
    trials: list[dict[str, Any]]
    mismatches: int


def _rts(trials: list[dict[str, Any]]) -> list[float]:
    return [float(v) for t in trials if isinstance(v := t.get("rt_ms"), int | float)]


def task_checks(task: TaskFacts, overrides: Overrides) -> list[Check]:
    """The rules that apply to this task's trials (a rule whose fields the trials lack is
    not evaluated, rather than reported quiet)."""
    trials, checks = task.trials, []

    def check(rule: str, observed: float | None, fired: bool, **detail: Any) -> None:
        checks.append(
            Check(
                rule,
                "task",
                limits[rule],
                observed,
                fired,
                task.module_key,
                task.position,
                detail,
            )
        )

    limits = {rule: thresholds(rule, task.module_key, overrides) for rule in DEFAULTS}
    check(
        "summary_mismatch",
        float(task.mismatches),
        task.mismatches > limits["summary_mismatch"]["max_mismatches"],
    )
    rts = _rts(trials)
    if task.questionnaire:
        codes = [t.get("response_code") for t in trials]
        distinct = len(set(map(repr, codes)))
        enough = len(codes) >= limits["straight_lining"]["min_items"]
        check("straight_lining", float(distinct), enough and distinct == 1, n_answers=len(codes))
    else:
        floor = limits["anticipations"]["floor_ms"]
        answered = [t for t in trials if t.get("responded") is True or t.get("rt_ms") is not None]
        early = [
            t
            for t in answered
            if t.get("anticipation") is True
            or (isinstance(rt := t.get("rt_ms"), int | float) and rt < floor)
        ]
        if answered:
            share = len(early) / len(answered)
            check("anticipations", share, share > limits["anticipations"]["max_share"])
        with_flag = [t for t in trials if isinstance(t.get("responded"), bool)]
        if any("target" in t for t in with_flag):
            with_flag = [t for t in with_flag if t.get("target") is True]
        if with_flag:
            share = sum(1 for t in with_flag if not t["responded"]) / len(with_flag)
            check("omissions", share, share > limits["omissions"]["max_share"])
        onsets = [
            float(v) for t in trials if isinstance(v := t.get("stimulus_onset_ms"), int | float)
        ]
        if len(onsets) >= 2:
            gap = max(b - a for a, b in pairwise(onsets))
            check("long_gap", gap, gap > limits["long_gap"]["max_gap_ms"])
    positive = [rt for rt in rts if rt > 0]
    if positive:
        median = float(statistics.median(positive))
        check("rt_units", median, median < limits["rt_units"]["max_median_ms"])
    return checks


@dataclass(frozen=True)
class SessionFacts:
    battery_keys: list[str]
    submitted_keys: set[str]
    client_started_at: datetime
    started_at: datetime
    client_ended_at: datetime | None
    # (client_submitted_at, received_at) per submission
    submissions: list[tuple[datetime | None, datetime]]
    events: list[dict[str, Any]]


def session_checks(facts: SessionFacts, overrides: Overrides) -> list[Check]:
    checks: list[Check] = []

    def check(rule: str, limits: Thresholds, observed: float | None, fired: bool, **d: Any) -> None:
        checks.append(Check(rule, "session", limits, observed, fired, detail=d))

    limits = thresholds("focus_loss", None, overrides)
    lost = [e for e in facts.events if e.get("type") in FOCUS_EVENTS]
    # Which task it happened in, where the client said so.
    by_module = Counter(str(e.get("module_key") or "") for e in lost)
    check(
        "focus_loss",
        limits,
        float(len(lost)),
        len(lost) > limits["max_events"],
        by_module=dict(sorted(by_module.items())),
    )

    limits = thresholds("clock_drift", None, overrides)
    # A session start synced from an offline queue reaches the server late, so only a start
    # the device dates after its receipt counts (no device starts in the future); a
    # submission's client_submitted_at is the device's clock when sent, either way.
    drifts = [max((facts.client_started_at - facts.started_at).total_seconds(), 0.0)]
    drifts += [
        abs((c - server).total_seconds()) for c, server in facts.submissions if c is not None
    ]
    drift = max(drifts)
    check("clock_drift", limits, drift, drift > limits["max_drift_s"])

    limits = thresholds("incomplete_battery", None, overrides)
    missing = [k for k in facts.battery_keys if k not in facts.submitted_keys]
    check(
        "incomplete_battery",
        limits,
        float(len(missing)),
        len(missing) > limits["max_missing"],
        missing=missing,
    )

    norms = [thresholds("duration", k, overrides).get("norm_s") for k in facts.battery_keys]
    if facts.client_ended_at is not None and norms and all(n is not None for n in norms):
        limits = thresholds("duration", None, overrides) | {"norm_s": sum(n or 0.0 for n in norms)}
        seconds = (facts.client_ended_at - facts.client_started_at).total_seconds()
        ratio = seconds / limits["norm_s"] if limits["norm_s"] else None
        fired = ratio is not None and not limits["min_ratio"] <= ratio <= limits["max_ratio"]
        check("duration", limits, seconds, fired, ratio=ratio)
    return checks
