"""Each data-quality rule on its own: it fires on trials or a session crafted to break it (and
only it), stays quiet on a clean one, and takes a study's thresholds over the defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.scoring import quality
from server.scoring.quality import SessionFacts, TaskFacts

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def _rt(rts: list[float | None], gap: float = 1500.0) -> list[dict[str, Any]]:
    return [
        {"trial_index": i, "stimulus_onset_ms": gap * i, "rt_ms": rt, "responded": rt is not None}
        for i, rt in enumerate(rts)
    ]


CLEAN_RT = _rt([300.0 + i for i in range(20)])


def _fired(task: TaskFacts, overrides: quality.Overrides | None = None) -> set[str]:
    return {c.rule for c in quality.task_checks(task, overrides or {}) if c.fired}


def _task(
    trials: list[dict[str, Any]], *, mismatches: int = 0, questionnaire: bool = False
) -> TaskFacts:
    key = "mood9" if questionnaire else "simple_rt"
    return TaskFacts(key, 0, questionnaire, trials, mismatches)


def _with_gap() -> list[dict[str, Any]]:
    trials = _rt([300.0 + i for i in range(20)])
    for t in trials[10:]:
        t["stimulus_onset_ms"] += 40_000.0  # 41.5 s between trials 9 and 10
    return trials


ANSWERS = [
    {"trial_index": n, "item_id": f"m{n + 1}", "response_code": c, "rt_ms": 1500.0}
    for n, c in enumerate([0, 1, 2, 3, 1, 2, 0, 1, 2])
]


@pytest.mark.parametrize(
    ("rule", "task"),
    [
        # 3 of 20 answers under 100 ms: 15 % > 10 %
        ("anticipations", _task(_rt([50.0, 60.0, 70.0] + [300.0 + i for i in range(17)]))),
        # 5 of 20 without a response: 25 % > 20 %
        ("omissions", _task(_rt([None] * 5 + [300.0 + i for i in range(15)]))),
        ("long_gap", _task(_with_gap())),
        ("summary_mismatch", _task(CLEAN_RT, mismatches=1)),
        ("straight_lining", _task([a | {"response_code": 2} for a in ANSWERS], questionnaire=True)),
    ],
)
def test_a_task_rule_fires_alone_on_its_crafted_trials(rule: str, task: TaskFacts) -> None:
    assert _fired(task) == {rule}


def test_rts_in_seconds_fire_the_units_rule() -> None:
    # 0.3 s sent as "0.3 ms": the units rule, and every answer is under the anticipation floor
    assert _fired(_task(_rt([0.3 + i / 100 for i in range(20)]))) == {"rt_units", "anticipations"}


def test_clean_tasks_fire_nothing() -> None:
    assert _fired(_task(CLEAN_RT)) == set()
    assert _fired(_task(ANSWERS, questionnaire=True)) == set()


def test_cpt_omissions_count_target_trials_only() -> None:
    trials = [
        {
            "trial_index": i,
            "target": i < 4,
            "responded": i in (0, 1, 2),
            "rt_ms": 300.0 if i < 3 else None,
        }
        for i in range(20)
    ]
    # one miss of 4 targets (25 %); the 16 withheld non-targets are correct, not omissions
    (omissions,) = [
        c
        for c in quality.task_checks(TaskFacts("cpt", 0, False, trials, 0), {})
        if c.rule == "omissions"
    ]
    assert omissions.observed == 0.25 and omissions.fired


def _session(**changes: Any) -> SessionFacts:
    clean = SessionFacts(
        battery_keys=["simple_rt", "mood9"],
        submitted_keys={"simple_rt", "mood9"},
        client_started_at=NOW,
        started_at=NOW + timedelta(seconds=2),
        client_ended_at=NOW + timedelta(seconds=300),  # norm 180 + 120
        submissions=[(NOW + timedelta(seconds=301), NOW + timedelta(seconds=303))],
        events=[{"type": "focus_gained"}],
    )
    return SessionFacts(**(vars(clean) | changes))


def _session_fired(facts: SessionFacts, overrides: quality.Overrides | None = None) -> set[str]:
    return {c.rule for c in quality.session_checks(facts, overrides or {}) if c.fired}


@pytest.mark.parametrize(
    ("rule", "changes"),
    [
        ("focus_loss", {"events": [{"type": "focus_lost"}]}),
        ("focus_loss", {"events": [{"type": "app_backgrounded"}]}),
        (
            "clock_drift",
            {"submissions": [(NOW + timedelta(hours=2), NOW + timedelta(seconds=303))]},
        ),
        ("clock_drift", {"started_at": NOW - timedelta(minutes=10)}),  # started in the future
        ("duration", {"client_ended_at": NOW + timedelta(seconds=100)}),  # 1/3 of the norm
        ("duration", {"client_ended_at": NOW + timedelta(seconds=900)}),  # 3 times the norm
        ("incomplete_battery", {"submitted_keys": {"simple_rt"}}),
    ],
)
def test_a_session_rule_fires_alone_on_its_crafted_session(
    rule: str, changes: dict[str, Any]
) -> None:
    assert _session_fired(_session(**changes)) == {rule}


def test_a_clean_session_fires_nothing_and_reports_what_it_measured() -> None:
    checks = {c.rule: c for c in quality.session_checks(_session(), {})}
    assert not any(c.fired for c in checks.values())
    assert checks["duration"].observed == 300 and checks["duration"].threshold["norm_s"] == 300
    assert checks["clock_drift"].observed == 2
    assert checks["incomplete_battery"].detail == {"missing": []}


def test_focus_loss_says_in_which_task() -> None:
    events = [
        {"type": "app_backgrounded", "module_key": "cpt"},
        {"type": "focus_lost", "module_key": "cpt"},
        {"type": "focus_lost"},
        {"type": "focus_gained", "module_key": "cpt"},
    ]
    (focus,) = [
        c for c in quality.session_checks(_session(events=events), {}) if c.rule == "focus_loss"
    ]
    assert focus.observed == 3 and focus.detail == {"by_module": {"": 1, "cpt": 2}}


def test_a_session_start_synced_late_is_not_clock_drift() -> None:
    # queued offline, heard of two hours later: the device's clock was right
    assert _session_fired(_session(started_at=NOW + timedelta(hours=2))) == set()


def test_a_session_not_ended_has_no_duration_check() -> None:
    assert "duration" not in {
        c.rule for c in quality.session_checks(_session(client_ended_at=None), {})
    }


def test_study_thresholds_win_over_module_and_rule_defaults() -> None:
    crafted = _task(_rt([50.0, 60.0, 70.0] + [300.0 + i for i in range(17)]))
    assert _fired(crafted, {"*": {"anticipations": {"max_share": 0.2}}}) == set()
    # the module's own setting wins over the study's "*"
    both = {
        "*": {"anticipations": {"max_share": 0.2}},
        "simple_rt": {"anticipations": {"max_share": 0.1}},
    }
    assert _fired(crafted, both) == {"anticipations"}
    # a lower floor makes the same answers ordinary
    assert _fired(crafted, {"simple_rt": {"anticipations": {"floor_ms": 40.0}}}) == set()
    assert quality.thresholds("duration", "cpt", {}) == {
        "min_ratio": 0.5,
        "max_ratio": 2.0,
        "norm_s": 480.0,
    }
