"""Plausible trial-level data for the built-in modules, as a participant's app would send it.

Each builder draws from the random.Random it is given (the demo seeds one per visit, so the
same visit gets the same data on every machine) and returns one task of a submission: its
trials, and the summary the app computes from them the way the server's scorers do
(server.scoring.scorers), so a clean task shows no client/server mismatch.

Reaction times are ex-Gaussian (a normal plus an exponential tail), as human RTs are; a few
trials are lapses (no response) or anticipations (a response under 100 ms).
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Any

Task = dict[str, Any]

# The built-in questionnaire's reverse-scored items (server.modules.builtin_questionnaires).
MOOD_ITEMS = tuple(f"m{n}" for n in range(1, 10))
MOOD_REVERSED = frozenset({"m5", "m8"})
CPT_LETTERS = "ABCDEFHJKL"


@dataclass(frozen=True)
class Profile:
    """One participant's abilities, drawn once: the same person from visit to visit."""

    rt_mu: float  # simple RT's normal part, ms
    rt_sigma: float
    rt_tau: float  # the exponential tail's mean, ms
    choice_cost: float  # extra ms to choose between two responses
    accuracy: float  # choice RT: share of correct choices
    cpt_hit: float  # CPT: chance of responding to a target
    cpt_false_alarm: float  # ... and to a non-target
    span_forward: int
    span_backward: int
    mood: float  # 0 (well) to 3 (severe): the mean item code on negatively worded items


def profile(rng: random.Random) -> Profile:
    return Profile(
        rt_mu=rng.gauss(255.0, 25.0),
        rt_sigma=rng.uniform(20.0, 35.0),
        rt_tau=rng.uniform(30.0, 70.0),
        choice_cost=rng.gauss(130.0, 20.0),
        accuracy=rng.uniform(0.92, 0.99),
        cpt_hit=rng.uniform(0.9, 0.99),
        cpt_false_alarm=rng.uniform(0.02, 0.10),
        span_forward=rng.choice((5, 6, 6, 7, 7, 8)),
        span_backward=rng.choice((4, 4, 5, 5, 6)),
        mood=rng.uniform(0.3, 1.8),
    )


def _rt(rng: random.Random, mu: float, p: Profile) -> float:
    return round(max(rng.gauss(mu, p.rt_sigma), 130.0) + rng.expovariate(1.0 / p.rt_tau), 1)


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def _rt_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    rts = [t["rt_ms"] for t in trials if t["responded"] and not t["anticipation"]]
    return {
        "n_trials": len(trials),
        "n_valid": len(rts),
        "mean_rt_ms": _mean(rts),
        "median_rt_ms": round(statistics.median(rts), 1) if rts else None,
        "sd_rt_ms": round(statistics.stdev(rts), 1) if len(rts) >= 2 else None,
        "n_lapses": sum(1 for t in trials if not t["responded"]),
    }


def _rt_trials(
    rng: random.Random, p: Profile, n: int, mu: float, anticipations: float
) -> list[dict[str, Any]]:
    trials, onset = [], 1000.0
    for i in range(n):
        draw = rng.random()
        if draw < anticipations:
            rt: float | None = round(rng.uniform(20.0, 95.0), 1)
        elif draw < anticipations + 0.02:
            rt = None  # a lapse: nothing within the response window
        else:
            rt = _rt(rng, mu, p)
        trials.append(
            {
                "trial_index": i,
                "stimulus_onset_ms": round(onset, 1),
                "rt_ms": rt,
                "responded": rt is not None,
                "anticipation": rt is not None and rt < 100.0,
            }
        )
        onset += (rt or 1500.0) + rng.uniform(1500.0, 3000.0)  # a variable foreperiod
    return trials


def simple_rt(rng: random.Random, p: Profile, *, practice: float, anticipations: float) -> Task:
    trials = _rt_trials(rng, p, 30, p.rt_mu - practice, anticipations)
    return {"module_key": "simple_rt", "module_version": 1, "summary": _rt_summary(trials),
            "trials": trials}  # fmt: skip


def choice_rt(rng: random.Random, p: Profile, *, practice: float) -> Task:
    trials = _rt_trials(rng, p, 40, p.rt_mu + p.choice_cost - practice, 0.01)
    for t in trials:
        t["stimulus"] = rng.choice(("left", "right"))
        other = "right" if t["stimulus"] == "left" else "left"
        hit = t["responded"] and not t["anticipation"] and rng.random() < p.accuracy
        lucky = t["anticipation"] and rng.random() < 0.5
        t["response"] = None if not t["responded"] else t["stimulus"] if hit or lucky else other
        t["correct"] = t["response"] == t["stimulus"]
    n_correct = sum(1 for t in trials if t["correct"])
    summary = _rt_summary(trials) | {
        "n_correct": n_correct,
        "accuracy": round(n_correct / len(trials), 3),
    }
    return {"module_key": "choice_rt", "module_version": 1, "summary": summary, "trials": trials}


def _z(rate: float, count: int, total: int) -> float:
    # The log-linear correction for a rate of 0 or 1 (server.scoring.stats.d_prime).
    if rate in (0.0, 1.0):
        rate = (count + 0.5) / (total + 1)
    return statistics.NormalDist().inv_cdf(rate)


def cpt(rng: random.Random, p: Profile, *, practice: float) -> Task:
    trials: list[dict[str, Any]] = []
    for i in range(80):
        target = rng.random() < 0.25
        responded = rng.random() < (p.cpt_hit if target else p.cpt_false_alarm)
        trials.append(
            {
                "trial_index": i,
                "stimulus": "X" if target else rng.choice(CPT_LETTERS),
                "target": target,
                "responded": responded,
                "correct": responded == target,
                "rt_ms": _rt(rng, p.rt_mu + 90.0 - practice, p) if responded else None,
            }
        )
    targets = [t for t in trials if t["target"]]
    others = [t for t in trials if not t["target"]]
    hits = [t for t in targets if t["responded"]]
    false_alarms = sum(1 for t in others if t["responded"])
    hit_rate, fa_rate = len(hits) / len(targets), false_alarms / len(others)
    d_prime = _z(hit_rate, len(hits), len(targets)) - _z(fa_rate, false_alarms, len(others))
    summary = {
        "n_trials": len(trials),
        "hits": len(hits),
        "misses": len(targets) - len(hits),
        "false_alarms": false_alarms,
        "correct_rejections": len(others) - false_alarms,
        "hit_rate": round(hit_rate, 3),
        "false_alarm_rate": round(fa_rate, 3),
        "d_prime": round(d_prime, 2),
        "mean_hit_rt_ms": _mean([t["rt_ms"] for t in hits]),
    }
    return {"module_key": "cpt", "module_version": 1, "summary": summary, "trials": trials}


def _sequence(rng: random.Random, length: int) -> list[int]:
    digits = [rng.randrange(10)]
    while len(digits) < length:
        digit = rng.randrange(10)
        if digit != digits[-1]:
            digits.append(digit)
    return digits


def digit_span(rng: random.Random, p: Profile) -> Task:
    """Two sequences at each length, from 3 forward (2 backward), until both at a length fail."""
    trials: list[dict[str, Any]] = []
    longest: dict[str, int | None] = {"forward": None, "backward": None}
    for direction, start, capacity in (("forward", 3, p.span_forward),
                                       ("backward", 2, p.span_backward)):  # fmt: skip
        for length in range(start, 10):
            passed = 0
            for _ in range(2):
                sequence = _sequence(rng, length)
                expected = sequence if direction == "forward" else sequence[::-1]
                chance = 0.95 if length <= capacity else 0.3 if length == capacity + 1 else 0.05
                response = list(expected)
                if rng.random() >= chance:  # one digit misremembered
                    slip = rng.randrange(length)
                    response[slip] = (response[slip] + rng.randrange(1, 10)) % 10
                correct = response == expected
                passed += correct
                if correct:
                    longest[direction] = length
                trials.append({"trial_index": len(trials), "direction": direction,
                               "span_length": length, "sequence": sequence,
                               "response": response, "correct": correct})  # fmt: skip
            if not passed:
                break
    summary = {
        "longest_span_forward": longest["forward"],
        "longest_span_backward": longest["backward"],
        "total_correct": sum(1 for t in trials if t["correct"]),
    }
    return {"module_key": "digit_span", "module_version": 1, "summary": summary, "trials": trials}


def mood9(rng: random.Random, p: Profile, *, drift: float) -> Task:
    level = min(max(p.mood + drift, 0.0), 3.0)
    trials, total = [], 0
    for n, item in enumerate(MOOD_ITEMS):
        # Positively worded items are answered the other way round.
        centre = 3.0 - level if item in MOOD_REVERSED else level
        code = min(max(round(rng.gauss(centre, 0.7)), 0), 3)
        total += 3 - code if item in MOOD_REVERSED else code
        trials.append({"trial_index": n, "item_id": item, "response_code": code,
                       "rt_ms": round(rng.uniform(1800.0, 6500.0), 1)})  # fmt: skip
    summary = {"total_score": total, "n_items_answered": len(trials)}
    return {"module_key": "mood9", "module_version": 1, "summary": summary, "trials": trials}
