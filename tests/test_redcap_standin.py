"""The REDCap stand-in, driven only through PyCap 2.7 (`redcap.Project`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redcap.project import Project  # the same class as `from redcap import Project`
from redcap.request import RedcapError

from tests.redcap_standin import (
    RedcapStandin,
    StandinProcess,
    classic_project,
    longitudinal_project,
)
from tests.redcap_standin.fields import METADATA_KEYS

FORMAT = (
    "The value you provided could not be validated because it does not follow the expected "
    "format. Please try again."
)


@pytest.fixture
def classic() -> Iterator[RedcapStandin]:
    with RedcapStandin(classic_project()) as standin:
        yield standin


@pytest.fixture
def longitudinal() -> Iterator[RedcapStandin]:
    with RedcapStandin(longitudinal_project()) as standin:
        yield standin


def pycap(standin: RedcapStandin, token: str | None = None) -> Project:
    return Project(standin.url, token or standin.token)


def error_of(excinfo: pytest.ExceptionInfo[RedcapError]) -> str:
    """PyCap raises RedcapError(<decoded JSON body>): pull REDCap's message out of it."""
    body: Any = excinfo.value.args[0]
    assert isinstance(body, dict), body
    message: str = body["error"]
    return message


def session(record: str, instance: Any, **values: Any) -> dict[str, Any]:
    return {
        "record_id": record,
        "redcap_repeat_instrument": "cognitive_session",
        "redcap_repeat_instance": instance,
        **values,
    }


# ----- project-level exports --------------------------------------------------------------------
def test_project_info_version_and_metadata(classic: RedcapStandin) -> None:
    project = pycap(classic)

    assert str(project.export_version()) == "14.5.10"  # a semantic_version.Version
    info = project.export_project_info()
    assert info["project_title"] == "Metricis demo (classic)"
    assert info["is_longitudinal"] == 0
    assert info["has_repeating_instruments_or_events"] == 1
    assert project.is_longitudinal is False
    assert project.def_field == "record_id"
    assert sorted(project.forms) == ["cognitive_session", "enrollment"]
    assert all(tuple(row) == METADATA_KEYS for row in project.metadata)

    only_age = project.export_metadata(fields=["age"])
    assert [(r["field_name"], r["text_validation_min"]) for r in only_age] == [("age", "18")]
    session_form = project.export_metadata(forms=["cognitive_session"])
    assert {r["form_name"] for r in session_form} == {"cognitive_session"}

    names = [f["export_field_name"] for f in project.export_field_names()]
    assert "conditions___99" in names and "conditions" not in names
    assert "enrol_info" not in names  # descriptive fields hold no data
    assert project.export_repeating_instruments_events() == [
        {"form_name": "cognitive_session", "custom_form_label": ""}
    ]
    assert [d["unique_group_name"] for d in project.export_dags()] == ["site_a", "site_b"]
    with pytest.raises(RedcapError) as excinfo:
        project.export_instrument_event_mappings()
    assert error_of(excinfo) == "You cannot export form/event mappings for classic projects"


def test_bad_token_and_missing_import_right(classic: RedcapStandin) -> None:
    with pytest.raises(RedcapError) as excinfo:
        Project(classic.url, "0123456789ABCDEF0123456789ABCDEF").export_records()
    assert error_of(excinfo) == "You do not have permissions to use the API"
    with pytest.raises(RedcapError, match="You do not have permissions"):
        Project(classic.url, "F" * 32).export_version()  # no format: XML error body

    reader = pycap(classic, classic.readonly_token)
    assert reader.export_records() == []
    with pytest.raises(RedcapError) as excinfo:
        reader.import_records([{"record_id": "1"}])
    assert error_of(excinfo) == "You do not have API Import/Update privileges"
    assert classic.records == []


# ----- records ----------------------------------------------------------------------------------
def test_export_import_round_trip(classic: RedcapStandin) -> None:
    project = pycap(classic)
    rows = [
        {"record_id": "1", "enrol_date": "2024-03-01", "age": 41, "weight_kg": 70.5, "sex": "2",
         "conditions___1": "1", "contact_email": "p1@example.org"},
        {"record_id": "2", "age": "67", "consent": "1"},
        session("1", 1, session_date="2024-03-02", srt_mean_rt_ms=312.25, srt_n_trials=20),
        session("1", 2, session_date="2024-04-02", srt_mean_rt_ms="298", srt_n_trials="20"),
    ]  # fmt: skip
    assert project.import_records(rows) == {"count": 2}

    exported = project.export_records()
    assert [(r["record_id"], r["redcap_repeat_instrument"], r["redcap_repeat_instance"])
            for r in exported] == [("1", "", ""), ("1", "cognitive_session", 1),
                                   ("1", "cognitive_session", 2), ("2", "", "")]  # fmt: skip
    first = exported[0]
    assert first["age"] == "41" and first["weight_kg"] == "70.5"
    assert (first["conditions___1"], first["conditions___2"]) == ("1", "0")
    assert first["enrollment_complete"] == "0" and first["cognitive_session_complete"] == ""
    assert exported[1]["srt_mean_rt_ms"] == "312.25" and exported[1]["age"] == ""
    assert all(isinstance(v, str) for r in exported for k, v in r.items()
               if k != "redcap_repeat_instance")  # fmt: skip

    # Exported rows import back unchanged, and nothing is duplicated.
    assert project.import_records(exported, return_content="ids") == ["1", "2"]
    assert project.export_records() == exported

    picked = project.export_records(records=["2"], fields=["age"])
    assert picked == [
        {"record_id": "2", "redcap_repeat_instrument": "", "redcap_repeat_instance": "",
         "age": "67"}
    ]  # fmt: skip
    sessions = project.export_records(forms=["cognitive_session"])
    assert {r["redcap_repeat_instrument"] for r in sessions} == {"cognitive_session"}

    assert project.delete_records(["2"]) == 1
    with pytest.raises(RedcapError, match="The following records do not exist: 9"):
        project.delete_records(["9"])
    assert {r["record_id"] for r in project.export_records()} == {"1"}


def test_unknown_field_rejects_the_whole_call(classic: RedcapStandin) -> None:
    project = pycap(classic)
    with pytest.raises(RedcapError) as excinfo:
        project.import_records(
            [
                {"record_id": "1", "age": "30"},
                {"record_id": "2", "shoe_size": "9", "conditions": "1"},
            ]
        )
    assert error_of(excinfo) == (
        "The following fields were not found in the project as real data fields: "
        "shoe_size, conditions"
    )
    assert classic.records == []


def test_invalid_values_give_one_csv_line_each(classic: RedcapStandin) -> None:
    project = pycap(classic)
    with pytest.raises(RedcapError) as excinfo:
        project.import_records(
            [
                {"record_id": "1", "age": "abc", "sex": "7", "enrol_date": "2024-02-30"},
                {"record_id": "2", "age": "12", "contact_email": "not-an-email",
                 "conditions___2": "2"},
                session("3", 1, srt_n_trials="0", session_started_at="2024-05-01 25:00"),
            ]
        )  # fmt: skip
    assert error_of(excinfo).split("\n") == [
        f'"1","age","abc","{FORMAT}"',
        '"1","sex","7","The value is not a valid category for sex"',
        f'"1","enrol_date","2024-02-30","{FORMAT}"',
        '"2","age","12","The value you provided is outside the acceptable range (18 - 110)."',
        f'"2","contact_email","not-an-email","{FORMAT}"',
        '"2","conditions___2","2","The value for a checkbox field must be 0 (unchecked) or 1 '
        '(checked)"',
        '"3","srt_n_trials","0","The value you provided is outside the acceptable range '
        '(1 - no limit)."',
        f'"3","session_started_at","2024-05-01 25:00","{FORMAT}"',
    ]
    assert classic.records == []

    # Without @FORCE-MINMAX an out-of-range value is admitted; REDCap only warns.
    assert project.import_records([{"record_id": "4", "weight_kg": "500"}]) == {"count": 1}
    assert "outside the suggested range (20 - 300)" in classic.calls[-1].warnings[0]


def test_repeating_instances_update_and_misuse_is_rejected(classic: RedcapStandin) -> None:
    project = pycap(classic)
    project.import_records([session("1", 1, srt_mean_rt_ms="300", srt_n_trials="10")])
    project.import_records([session("1", "1", srt_mean_rt_ms="305")])
    project.import_records([session("1", "new", srt_mean_rt_ms="290")])
    stored = [r for r in project.export_records() if r["redcap_repeat_instrument"]]
    assert [(r["redcap_repeat_instance"], r["srt_mean_rt_ms"], r["srt_n_trials"])
            for r in stored] == [(1, "305", "10"), (2, "290", "")]  # fmt: skip

    with pytest.raises(RedcapError) as excinfo:
        project.import_records(
            [
                {"record_id": "1", "redcap_repeat_instrument": "enrollment",
                 "redcap_repeat_instance": 1, "age": "30"},
                session("1", 0, srt_mean_rt_ms="1"),
                {"record_id": "1", "srt_mean_rt_ms": "1"},
            ]
        )  # fmt: skip
    lines = error_of(excinfo).split("\n")
    assert lines[0].startswith(
        '"1","redcap_repeat_instrument","enrollment","redcap_repeat_instrument must be the '
        "unique form name of a Repeating Instrument."
    )
    assert lines[1].startswith('"1","redcap_repeat_instance","1","redcap_repeat_instance '
                               "cannot have a value")  # fmt: skip
    assert lines[2].startswith('"1","redcap_repeat_instance","0",')
    assert lines[3].startswith(
        '"1","srt_mean_rt_ms","1","This field (\'srt_mean_rt_ms\') exists on a Repeating '
        "Instrument named 'cognitive_session'."
    )
    assert len(lines) == 4


def test_blank_values_normal_versus_overwrite(classic: RedcapStandin) -> None:
    project = pycap(classic)
    project.import_records([{"record_id": "1", "age": "30", "sex": "1", "conditions___3": "1"}])
    project.import_records([{"record_id": "1", "age": "", "sex": "2"}])
    row = project.export_records(fields=["age", "sex"])[0]
    assert (row["age"], row["sex"]) == ("30", "2")

    project.import_records(
        [{"record_id": "1", "age": "", "conditions___3": ""}], overwrite="overwrite"
    )
    row = project.export_records()[0]
    assert (row["age"], row["sex"], row["conditions___3"]) == ("", "2", "0")


def test_data_access_groups(classic: RedcapStandin) -> None:
    project = pycap(classic)
    project.import_records([{"record_id": "1", "redcap_data_access_group": "site_b"}])
    row = project.export_records(export_data_access_groups=True)[0]
    assert row["redcap_data_access_group"] == "site_b"
    assert "redcap_data_access_group" not in project.export_records()[0]
    with pytest.raises(RedcapError, match='"2","redcap_data_access_group","mars",'):
        project.import_records([{"record_id": "2", "redcap_data_access_group": "mars"}])


# ----- longitudinal -----------------------------------------------------------------------------
def test_longitudinal_events(longitudinal: RedcapStandin) -> None:
    project = pycap(longitudinal)
    assert project.is_longitudinal is True
    assert project.export_project_info()["is_longitudinal"] == 1
    assert [e["unique_event_name"] for e in project.export_events()] == [
        "baseline_arm_1", "month_6_arm_1"
    ]  # fmt: skip
    assert {"arm_num": 1, "unique_event_name": "month_6_arm_1", "form": "cognitive_session"} in (
        project.export_instrument_event_mappings()
    )

    with pytest.raises(RedcapError) as excinfo:
        project.import_records(
            [{"record_id": "1", "redcap_event_name": "visit_11_arm_1"},
             {"record_id": "2", "redcap_event_name": "baseline_arm_1"}]
        )  # fmt: skip
    assert error_of(excinfo) == (
        "The following values of redcap_event_name are invalid: visit_11_arm_1"
    )
    with pytest.raises(RedcapError, match="instrument that is not designated for the event"):
        project.import_records([{"record_id": "1", "redcap_event_name": "month_6_arm_1",
                                 "age": "50"}])  # fmt: skip

    baseline = {"record_id": "1", "redcap_event_name": "baseline_arm_1", "age": "50"}
    month_6 = {**session("1", 1, srt_n_trials="12"), "redcap_event_name": "month_6_arm_1"}
    assert project.import_records([baseline, month_6, month_6]) == {"count": 1}
    rows = project.export_records()
    assert [(r["redcap_event_name"], r["redcap_repeat_instance"]) for r in rows] == [
        ("baseline_arm_1", ""), ("month_6_arm_1", 1)
    ]  # fmt: skip
    only_month_6 = project.export_records(events=["month_6_arm_1"])
    assert [r["srt_n_trials"] for r in only_month_6] == ["12"]


# ----- knobs: failures, delay, going down -------------------------------------------------------
def test_injected_failures_delay_and_call_log(classic: RedcapStandin) -> None:
    project = pycap(classic)
    assert project.metadata  # PyCap fetches it lazily; fetch it before the faults start
    classic.reset()
    classic.fail(503, times=2)
    for _ in range(2):
        with pytest.raises(RedcapError):  # HTML body on a JSON call
            project.export_records()
    assert project.export_records() == []
    assert [c.status for c in classic.calls] == [503, 503, 200]

    classic.fail(502, times=1, after_processing=True)
    with pytest.raises(RedcapError):
        project.import_records([{"record_id": "7"}])
    assert [r["record_id"] for r in classic.records] == ["7"]  # stored, answer lost

    classic.delay_seconds = 0.2
    started = time.monotonic()
    project.export_records()
    assert time.monotonic() - started >= 0.2
    classic.delay_seconds = 0

    last = classic.calls[-1]
    assert (last.content, last.action, last.rows, last.status) == ("record", "export", 1, 200)
    assert last.finished_at - last.started_at >= 0.2
    assert classic.hits == len(classic.calls) == 5
    classic.reset()
    assert classic.hits == 0 and classic.records == []


def test_in_process_stop_and_restart_keeps_records(classic: RedcapStandin) -> None:
    project = pycap(classic)
    project.import_records([{"record_id": "1", "age": "33"}])
    port = classic.port
    classic.stop()
    with pytest.raises(RedcapError):  # requests.ConnectionError is a RedcapError
        project.export_records()
    classic.start()
    assert classic.port == port
    assert project.export_records(fields=["age"])[0]["age"] == "33"


def test_subprocess_survives_kill_9(tmp_path: Path) -> None:
    standin = StandinProcess(classic_project(), tmp_path)
    with standin:
        project = Project(standin.url, standin.token)
        project.import_records([{"record_id": "1", "age": "44"}, session("1", 1, srt_n_trials=5)])
        standin.kill()
        with pytest.raises(RedcapError):
            project.export_records()
        standin.start()
        rows = project.export_records()
        assert [(r["age"], r["srt_n_trials"]) for r in rows] == [("44", ""), ("", "5")]

        standin.control("configure", fail_with_status=500, times=1)
        with pytest.raises(RedcapError):
            project.export_records()
        state = standin.control()
        calls = [(c["content"], c["status"]) for c in state["calls"]]  # since the restart
        assert calls == [("metadata", 200), ("record", 200), ("record", 500)]
        assert len(state["records"]) == 2
