"""One scorer per module version: pure functions from a task's trials (and, for questionnaires,
its item bank) to every summary metric, computed by the server.

Each scorer has a key and a SCORER_VERSION; a stored score names both, so a number can be
traced to the code that computed it. Changing what a scorer computes means a new version
(re-scoring then adds rows beside the old ones). A module version without a scorer of its own
gets one from its definition: "questionnaire" for a questionnaire with an item bank, otherwise
"derived", which computes the metrics the module declares with `derived_from`.

Besides the module's own summary fields (compared with the client's), scorers add server-only
metrics: trimmed RT statistics (stats.trim_rts), anticipation counts, CPT omissions and
commissions, disagreements between the client's `correct` and the server's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.scoring import stats

Trials = list[dict[str, Any]]
Metrics = dict[str, Any]
Problem = dict[str, Any]


@dataclass(frozen=True)
class ScoringInput:
    trials: Trials
    # The module's metric definitions (key, unit, derived_from): the "derived" scorer's rules.
    metrics: list[dict[str, Any]] = field(default_factory=list)
    # The item bank's items (item_id, options [{code}], reverse_scored), for questionnaires.
    items: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class ScoreResult:
    summary: Metrics
    # Answers the item bank does not know (questionnaires): left out of the totals, kept here.
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Scorer:
    key: str
    version: str
    score: Callable[[ScoringInput], ScoreResult]


def _number(value: Any) -> float | None:
    """A trial's number, or None for a missing or non-numeric one: a scorer never fails on a
    trial its module's schema would refuse (a quarantined submission's, say)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _rts(trials: Trials) -> list[float]:
    return [rt for t in trials if (rt := _number(t.get("rt_ms"))) is not None]


def _rt_block(rts: list[float], prefix: str) -> Metrics:
    return {
        f"mean_{prefix}_ms": stats.mean(rts),
        f"median_{prefix}_ms": stats.median(rts),
        f"sd_{prefix}_ms": stats.sd(rts),
    }


def _rt_metrics(trials: Trials) -> Metrics:
    """simple_rt's definitions: valid = responded and not flagged an anticipation by the client;
    RT statistics over the valid trials with an RT; a lapse has no response."""
    valid = [t for t in trials if t.get("responded") is True and t.get("anticipation") is False]
    rts = _rts(valid)
    trimmed = stats.trim_rts(rts)
    early = [
        t
        for t in trials
        if t.get("anticipation") is True
        or ((rt := _number(t.get("rt_ms"))) is not None and rt < stats.ANTICIPATION_FLOOR_MS)
    ]
    return {
        "n_trials": len(trials),
        "n_valid": len(valid),
        **_rt_block(rts, "rt"),
        "n_lapses": sum(1 for t in trials if t.get("responded") is False),
        "n_anticipations": len(early),
        "n_trimmed": len(rts) - len(trimmed),
        **_rt_block(trimmed, "rt_trimmed"),
    }


def score_simple_rt(given: ScoringInput) -> ScoreResult:
    return ScoreResult(_rt_metrics(given.trials))


def score_choice_rt(given: ScoringInput) -> ScoreResult:
    trials = given.trials
    metrics = _rt_metrics(trials)
    n_correct = sum(1 for t in trials if t.get("correct") is True)
    correct_rts = _rts(
        [
            t
            for t in trials
            if t.get("correct") is True
            and t.get("responded") is True
            and t.get("anticipation") is False
        ]
    )
    metrics |= {
        "n_correct": n_correct,
        "accuracy": stats.proportion(n_correct, len(trials)),
        "mean_rt_correct_ms": stats.mean(correct_rts),
    }
    return ScoreResult(metrics)


def score_cpt(given: ScoringInput) -> ScoreResult:
    trials = given.trials
    targets = [t for t in trials if t.get("target") is True]
    others = [t for t in trials if t.get("target") is False]
    hits = [t for t in targets if t.get("responded") is True]
    false_alarms = sum(1 for t in others if t.get("responded") is True)
    hit_rts = _rts(hits)
    return ScoreResult(
        {
            "n_trials": len(trials),
            "hits": len(hits),
            "misses": len(targets) - len(hits),
            "false_alarms": false_alarms,
            "correct_rejections": len(others) - false_alarms,
            "hit_rate": stats.proportion(len(hits), len(targets)),
            "false_alarm_rate": stats.proportion(false_alarms, len(others)),
            "d_prime": stats.d_prime(len(hits), len(targets), false_alarms, len(others)),
            "mean_hit_rt_ms": stats.mean(hit_rts),
            # The field's names for the same counts: omissions are misses, commissions are
            # false alarms.
            "omissions": len(targets) - len(hits),
            "commissions": false_alarms,
            "median_hit_rt_ms": stats.median(hit_rts),
            "sd_hit_rt_ms": stats.sd(hit_rts),
        }
    )


def _recalled(trial: dict[str, Any]) -> bool:
    """Correct as the server sees it: the response is the sequence, reversed for backward."""
    sequence, response = trial.get("sequence"), trial.get("response")
    if not isinstance(sequence, list) or not isinstance(response, list):
        return False
    return response == (sequence[::-1] if trial.get("direction") == "backward" else sequence)


def score_digit_span(given: ScoringInput) -> ScoreResult:
    trials = given.trials
    recalled = [t for t in trials if _recalled(t)]

    def longest(direction: str) -> int | None:
        spans = [
            int(span)
            for t in recalled
            if t.get("direction") == direction and (span := _number(t.get("span_length")))
        ]
        return max(spans) if spans else None

    return ScoreResult(
        {
            "longest_span_forward": longest("forward"),
            "longest_span_backward": longest("backward"),
            "total_correct": len(recalled),
            # Trials whose `correct` the client marked otherwise than the response shows.
            "n_correct_disagreements": sum(
                1 for t in trials if bool(t.get("correct")) != _recalled(t)
            ),
        }
    )


def score_questionnaire(given: ScoringInput) -> ScoreResult:
    """Total of the response codes, reverse-scored items counted as (lowest + highest code -
    code), i.e. 3 - code on a 0-3 scale. Only answers the item bank knows count: an unknown item
    id, a code the item does not offer, or a second answer to the same item is left out of
    the total and reported as a problem."""
    items = {i["item_id"]: i for i in given.items or []}
    problems: list[Problem] = []
    seen: set[str] = set()
    total = 0
    for index, trial in enumerate(given.trials):
        item_id, code = trial.get("item_id"), trial.get("response_code")
        item = items.get(item_id) if isinstance(item_id, str) else None
        codes = [int(o["code"]) for o in item["options"]] if item is not None else []
        if item is None or not isinstance(item_id, str):
            problems.append(_problem(index, "item_id", "unknown_item", item_id))
        elif not isinstance(code, int) or isinstance(code, bool) or code not in codes:
            problems.append(_problem(index, "response_code", "unknown_response_code", code))
        elif item_id in seen:
            problems.append(_problem(index, "item_id", "duplicate_item", item_id))
        else:
            seen.add(item_id)
            total += min(codes) + max(codes) - code if item.get("reverse_scored") else code
    return ScoreResult(
        {
            "total_score": total,
            "n_items_answered": len(seen),
            "n_items_missing": len(items) - len(seen),
            "n_answer_problems": len(problems),
        },
        problems,
    )


def _problem(index: int, name: str, kind: str, value: Any) -> Problem:
    return {"loc": ["trials", index, name], "type": kind, "value": value}


def _aggregate(rule: dict[str, Any], trials: Trials) -> float | None:
    where = rule.get("where") or {}
    selected = [t for t in trials if all(t.get(k) == v for k, v in where.items())]
    op, name = rule["op"], str(rule.get("field"))
    if op == "count":
        return len(selected)  # a count reads as one: 3, not 3.0
    if op == "proportion":
        return stats.proportion(sum(1 for t in selected if t.get(name)), len(selected))
    values = [float(v) for t in selected if isinstance(v := t.get(name), int | float)]
    if not values:
        return None
    reducers: dict[str, Callable[[list[float]], float]] = {
        "mean": lambda v: math.fsum(v) / len(v),
        "sum": math.fsum,
        "min": min,
        "max": max,
    }
    return reducers[op](values) if op in reducers else None


def score_derived(given: ScoringInput) -> ScoreResult:
    """The module's own `derived_from` rules (count, proportion, mean, sum, min, max)."""
    return ScoreResult(
        {
            m["key"]: _aggregate(m["derived_from"], given.trials)
            for m in given.metrics
            if m.get("derived_from")
        }
    )


BUILTIN: dict[tuple[str, int], Scorer] = {
    ("simple_rt", 1): Scorer("simple_rt", "1", score_simple_rt),
    ("choice_rt", 1): Scorer("choice_rt", "1", score_choice_rt),
    ("cpt", 1): Scorer("cpt", "1", score_cpt),
    ("digit_span", 1): Scorer("digit_span", "1", score_digit_span),
    ("mood9", 1): Scorer("questionnaire", "1", score_questionnaire),
}
QUESTIONNAIRE = Scorer("questionnaire", "1", score_questionnaire)
DERIVED = Scorer("derived", "1", score_derived)


def scorer_for(module_key: str, module_version: int, *, has_item_bank: bool) -> Scorer:
    builtin = BUILTIN.get((module_key, module_version))
    if builtin is not None:
        return builtin
    return QUESTIONNAIRE if has_item_bank else DERIVED
