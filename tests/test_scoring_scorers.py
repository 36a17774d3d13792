"""Each built-in scorer against values worked out by hand here, on small crafted trial lists."""

from __future__ import annotations

import math
from typing import Any

import pytest

from server.modules.builtin_questionnaires import MOOD9_ITEM_BANK
from server.scoring import stats
from server.scoring.compare import compare
from server.scoring.scorers import ScoringInput, scorer_for
from tests.ingest_factories import RT_METRICS

# z(0.75) = -z(0.25) = 0.6744897501960817; z(0.9) = -z(0.1) = 1.2815515655446004
Z75 = 0.6744897501960817
Z90 = 1.2815515655446004


def _rt(i: int, rt: float | None, responded: bool, anticipation: bool = False) -> dict[str, Any]:
    return {
        "trial_index": i,
        "stimulus_onset_ms": 1000.0 * i,
        "rt_ms": rt,
        "responded": responded,
        "anticipation": anticipation,
    }


RT_TRIALS = [
    _rt(0, 200.0, True),
    _rt(1, 300.0, True),
    _rt(2, 400.0, True),
    _rt(3, 500.0, True),
    _rt(4, 80.0, True),  # valid by the module's rule (not flagged), but under the 100 ms floor
    _rt(5, -20.0, True, anticipation=True),  # flagged by the client: not valid
    _rt(6, None, False),  # a lapse
]


def _score(key: str, trials: list[dict[str, Any]], **given: Any) -> dict[str, Any]:
    scorer = scorer_for(key, 1, has_item_bank=key == "mood9")
    return scorer.score(ScoringInput(trials, **given)).summary


def test_simple_rt_by_hand() -> None:
    s = _score("simple_rt", RT_TRIALS)
    # valid: 200, 300, 400, 500, 80 -> mean 1480 / 5 = 296, median 300
    # deviations -96, 4, 104, 204, -216 -> squares 9216 + 16 + 10816 + 41616 + 46656 = 108320
    # sample variance 108320 / 4 = 27080
    assert (s["n_trials"], s["n_valid"], s["n_lapses"]) == (7, 5, 1)
    assert s["mean_rt_ms"] == pytest.approx(296.0)
    assert s["median_rt_ms"] == 300.0
    assert s["sd_rt_ms"] == pytest.approx(math.sqrt(27080))
    # anticipations: the 80 ms response and the flagged one
    assert s["n_anticipations"] == 2
    # trimmed: 80 goes (floor); 200..500 have mean 350, SD sqrt(50000 / 3) = 129.1,
    # ceiling 350 + 3 * 129.1 = 737.3: nothing else goes
    assert s["n_trimmed"] == 1
    assert s["mean_rt_trimmed_ms"] == pytest.approx(350.0)
    assert s["median_rt_trimmed_ms"] == 350.0
    assert s["sd_rt_trimmed_ms"] == pytest.approx(math.sqrt(50000 / 3))


def test_trimming_drops_the_floor_then_beyond_three_sd() -> None:
    # After the floor: twenty 300s and one 3000. mean 9000 / 21 = 428.57; squared deviations
    # 20 * 128.57^2 + 2571.43^2 = 6942857; SD sqrt(6942857 / 20) = 589.2;
    # ceiling 428.57 + 3 * 589.2 = 2196: the 3000 goes.
    assert stats.trim_rts([50.0, *[300.0] * 20, 3000.0]) == [300.0] * 20
    # Fewer than three after the floor: only the floor applies.
    assert stats.trim_rts([99.0, 300.0, 9000.0]) == [300.0, 9000.0]


def test_choice_rt_by_hand() -> None:
    trials = [
        t | {"stimulus": "left", "response": "left" if n in (0, 1, 3) else "right"}
        for n, t in enumerate(RT_TRIALS)
    ]
    trials = [t | {"correct": n in (0, 1, 3)} for n, t in enumerate(trials)]
    s = _score("choice_rt", trials)
    assert s["n_correct"] == 3
    assert s["accuracy"] == pytest.approx(3 / 7)
    # correct and valid: 200, 300, 500 -> 1000 / 3
    assert s["mean_rt_correct_ms"] == pytest.approx(1000 / 3)
    assert s["mean_rt_ms"] == pytest.approx(296.0)


def _cpt(i: int, target: bool, responded: bool, rt: float | None = None) -> dict[str, Any]:
    return {
        "trial_index": i,
        "stimulus": "X" if target else "A",
        "target": target,
        "responded": responded,
        "correct": target == responded,
        "rt_ms": rt,
    }


def test_cpt_by_hand() -> None:
    trials = [
        _cpt(0, True, True, 400.0),
        _cpt(1, True, True, 500.0),
        _cpt(2, True, False),
        _cpt(3, True, True, 300.0),
        _cpt(4, False, True, 250.0),
        _cpt(5, False, False),
        _cpt(6, False, False),
        _cpt(7, False, False),
    ]
    s = _score("cpt", trials)
    assert (s["hits"], s["misses"], s["false_alarms"], s["correct_rejections"]) == (3, 1, 1, 3)
    assert (s["omissions"], s["commissions"]) == (1, 1)
    assert (s["hit_rate"], s["false_alarm_rate"]) == (0.75, 0.25)
    # z(0.75) - z(0.25) = 2 * 0.67449
    assert s["d_prime"] == pytest.approx(2 * Z75)
    assert s["mean_hit_rt_ms"] == pytest.approx(400.0)  # (400 + 500 + 300) / 3


def test_cpt_d_prime_corrects_rates_of_zero_and_one() -> None:
    # 4 of 4 targets, 0 of 4 non-targets: (4 + 0.5) / 5 = 0.9 and (0 + 0.5) / 5 = 0.1
    trials = [_cpt(i, True, True, 300.0) for i in range(4)]
    trials += [_cpt(i, False, False) for i in range(4, 8)]
    s = _score("cpt", trials)
    assert (s["hit_rate"], s["false_alarm_rate"]) == (1.0, 0.0)
    assert s["d_prime"] == pytest.approx(2 * Z90)
    assert _score("cpt", trials[:4])["d_prime"] is None  # no non-targets: no d'


def _span(i: int, direction: str, sequence: list[int], response: list[int], correct: bool) -> dict:
    return {
        "trial_index": i,
        "direction": direction,
        "span_length": len(sequence),
        "sequence": sequence,
        "response": response,
        "correct": correct,
    }


def test_digit_span_by_hand_from_the_responses() -> None:
    trials = [
        _span(0, "forward", [1, 2, 3], [1, 2, 3], True),
        _span(1, "forward", [4, 5, 6, 7], [4, 5, 6, 7], True),
        _span(2, "forward", [8, 1, 4, 2, 9], [8, 1, 2, 4, 9], False),
        # Recalled backwards correctly, but the client marked it wrong: the server counts it.
        _span(3, "backward", [3, 9, 4], [4, 9, 3], False),
        _span(4, "backward", [1, 2, 3, 4], [4, 3, 2, 1], True),
    ]
    s = _score("digit_span", trials)
    assert (s["longest_span_forward"], s["longest_span_backward"]) == (4, 4)
    assert s["total_correct"] == 4
    assert s["n_correct_disagreements"] == 1
    none_back = _score("digit_span", trials[:3])
    assert none_back["longest_span_backward"] is None


ITEMS = MOOD9_ITEM_BANK["items"]


def _answer(i: int, item_id: str, code: Any) -> dict[str, Any]:
    return {"trial_index": i, "item_id": item_id, "response_code": code, "rt_ms": 1200.0}


def test_questionnaire_total_reverse_scores_from_the_item_bank() -> None:
    codes = [2, 1, 3, 0, 1, 2, 0, 3, 1]
    trials = [_answer(n, f"m{n + 1}", c) for n, c in enumerate(codes)]
    result = scorer_for("mood9", 1, has_item_bank=True).score(ScoringInput(trials, items=ITEMS))
    # m5 (1) and m8 (3) are reverse-scored: 3 - 1 = 2 and 3 - 3 = 0
    # 2 + 1 + 3 + 0 + 2 + 2 + 0 + 0 + 1 = 11
    assert result.summary["total_score"] == 11
    assert result.summary["n_items_answered"] == 9 and result.problems == []


def test_questionnaire_answers_checked_against_item_ids_and_codes() -> None:
    trials = [
        _answer(0, "m1", 3),
        _answer(1, "m2", 7),  # no such code
        _answer(2, "m99", 1),  # no such item
        _answer(3, "m1", 0),  # m1 again
    ]
    result = scorer_for("mood9", 1, has_item_bank=True).score(ScoringInput(trials, items=ITEMS))
    assert result.summary == {
        "total_score": 3,
        "n_items_answered": 1,
        "n_items_missing": 8,
        "n_answer_problems": 3,
    }
    assert [(p["loc"], p["type"]) for p in result.problems] == [
        (["trials", 1, "response_code"], "unknown_response_code"),
        (["trials", 2, "item_id"], "unknown_item"),
        (["trials", 3, "item_id"], "duplicate_item"),
    ]


def test_a_module_without_a_scorer_of_its_own_is_scored_by_its_derived_metrics() -> None:
    trials = [
        {"trial_index": 0, "rt_ms": 300.0, "responded": True, "correct": True},
        {"trial_index": 1, "rt_ms": 500.0, "responded": True, "correct": False},
        {"trial_index": 2, "rt_ms": None, "responded": False, "correct": False},
    ]
    scorer = scorer_for("custom_rt", 3, has_item_bank=False)
    assert (scorer.key, scorer.version) == ("derived", "1")
    s = scorer.score(ScoringInput(trials, RT_METRICS)).summary
    # count 3; mean of responded 300 and 500 = 400; correct 1 of 3
    assert s == {"n_trials": 3, "mean_rt_ms": 400.0, "accuracy": pytest.approx(1 / 3)}
    assert isinstance(s["n_trials"], int)


def test_mismatch_tolerances_by_unit() -> None:
    metrics = [
        {"key": "n", "unit": "count"},
        {"key": "rt", "unit": "ms"},
        {"key": "p", "unit": "proportion"},
        {"key": "d", "unit": "z"},
        {"key": "gone", "unit": "ms"},
    ]
    client = {"n": 10, "rt": 300.4, "p": 0.5004, "d": 1.2, "gone": None, "extra": 1}
    server = {"n": 11, "rt": 300.0, "p": 0.5, "d": 1.2149, "gone": 12.0}
    result = compare(client, server, metrics)
    assert set(result) == {"n", "rt", "p", "d", "gone"}  # "extra": the server has no such metric
    assert {k: v["mismatch"] for k, v in result.items()} == {
        "n": True,  # counts agree exactly or not at all
        "rt": False,  # within 0.5 ms
        "p": False,  # within 0.001
        "d": True,  # 0.0149 > 0.01
        "gone": True,  # null on one side only
    }
    assert result["n"]["diff"] == 1.0 and result["gone"]["diff"] is None


@pytest.mark.parametrize("key", ["simple_rt", "choice_rt", "cpt", "digit_span", "mood9"])
def test_a_scorer_never_fails_on_trials_its_schema_would_refuse(key: str) -> None:
    """A quarantined submission's trials can be anything its schema refuses: no exception."""
    garbage: list[dict[str, Any]] = [
        {"trial_index": 0, "rt_ms": "fast", "responded": "yes", "span_length": "long"},
        {"trial_index": 1, "sequence": 7, "response": "1,2", "item_id": 3, "response_code": "2"},
        {},
    ]
    summary = _score(key, garbage, items=ITEMS)
    assert summary  # scored, with what could be read
