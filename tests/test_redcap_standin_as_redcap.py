"""The stand-in answers as REDCap does where a client could be misled (issue 11, point 7):
events left out of a longitudinal import, REDCap's own error texts, exportFieldNames."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redcap.project import Project
from redcap.request import RedcapError

from tests.redcap_standin import (
    Arm,
    Event,
    FormEvent,
    ProjectModel,
    RedcapStandin,
    classic_project,
    field,
    longitudinal_project,
)

NOT_DESIGNATED = (
    "This field ('{field}') exists on an instrument that is not designated for the event named "
    "'{event}'. You are not allowed to import data for this field into this event."
)
NOT_REPEATING = (
    "This field ('{field}') exists on a Repeating Instrument named '{form}'. However, the "
    "fields 'redcap_repeat_instance' and/or 'redcap_repeat_instrument' for this row of data have "
    "no value, which are both required for importing data into a Repeating Instrument.  You are "
    "not allowed to import data for this field into a non-repeating instrument."
)


@contextmanager
def serve(project: ProjectModel) -> Iterator[Project]:
    """PyCap on a stand-in of this project."""
    with RedcapStandin(project) as standin:
        yield Project(standin.url, standin.token)


@pytest.fixture
def classic() -> Iterator[Project]:
    with serve(classic_project()) as project:
        yield project


@pytest.fixture
def longitudinal() -> Iterator[Project]:
    with serve(longitudinal_project()) as project:
        yield project


def error_of(excinfo: pytest.ExceptionInfo[RedcapError]) -> str:
    body: Any = excinfo.value.args[0]
    assert isinstance(body, dict), body
    return str(body["error"])


def test_a_row_without_its_event_goes_to_the_first_event(longitudinal: Project) -> None:
    # REDCap takes it (200, the count): a client that forgets the event is not told.
    assert longitudinal.import_records([{"record_id": "1", "age": "50"}]) == {"count": 1}
    [row] = longitudinal.export_records(fields=["age"])
    assert (row["redcap_event_name"], row["age"]) == ("baseline_arm_1", "50")

    # The first event's rules hold for it: cognitive_session repeats there.
    with pytest.raises(RedcapError) as excinfo:
        longitudinal.import_records([{"record_id": "1", "srt_n_trials": "3"}])
    assert error_of(excinfo) == '"1","srt_n_trials","3","{}"'.format(
        NOT_REPEATING.format(field="srt_n_trials", form="cognitive_session")
    )


def test_the_first_event_is_the_first_arms_whatever_the_listing_order() -> None:
    project = longitudinal_project()
    project.arms = [Arm(1, "Arm 1"), Arm(2, "Drug B")]
    project.events = [Event("screening_arm_2", "Screening", 2), *project.events]
    project.form_event_mapping.append(FormEvent("screening_arm_2", "enrollment"))
    with serve(project) as longitudinal:
        longitudinal.import_records([{"record_id": "7", "age": "40"}])
        assert [r["redcap_event_name"] for r in longitudinal.export_records()] == ["baseline_arm_1"]


def test_event_designation_error_is_redcaps_text(longitudinal: Project) -> None:
    with pytest.raises(RedcapError) as excinfo:
        longitudinal.import_records(
            [{"record_id": "1", "redcap_event_name": "month_6_arm_1", "age": "30"}]
        )
    assert error_of(excinfo) == '"1","age","30","{}"'.format(
        NOT_DESIGNATED.format(field="age", event="Month 6 (Arm 1: Arm 1)")
    )


def test_field_names_list_form_status_and_leave_out_file_uploads() -> None:
    project = classic_project()
    scan = field("consent_scan", "enrollment", "Signed consent (scan)", "file")
    project.metadata.insert(len(project.fields_of_form("enrollment")), scan)
    with serve(project) as classic:
        names = [
            (n["original_field_name"], n["choice_value"], n["export_field_name"])
            for n in classic.export_field_names()
        ]
        assert ("consent_scan", "", "consent_scan") not in names
        assert [n for _, _, n in names if n.endswith("_complete")] == [
            "enrollment_complete", "cognitive_session_complete"
        ]  # fmt: skip
        # Each form's status follows its own fields, as REDCap lists them.
        exported = [n for _, _, n in names]
        assert exported.index("contact_email") + 1 == exported.index("enrollment_complete")
        assert exported[-1] == "cognitive_session_complete"
        assert ("conditions", "99", "conditions___99") in names

        assert classic.export_field_names(field="enrollment_complete") == [
            {"original_field_name": "enrollment_complete", "choice_value": "",
             "export_field_name": "enrollment_complete"}
        ]  # fmt: skip
        assert classic.export_field_names(field="consent_scan") == []


def test_invalid_fields_error_names_the_parameter_bare(classic: Project) -> None:
    with pytest.raises(RedcapError) as excinfo:
        classic.export_records(fields=["shoe_size", "age", "hat_size"])
    assert error_of(excinfo) == (
        "The following values in the parameter fields are not valid: 'shoe_size', 'hat_size'"
    )
    with pytest.raises(RedcapError) as excinfo:
        classic.export_metadata(fields=["shoe_size"])
    assert error_of(excinfo) == (
        "The following values in the parameter fields are not valid: 'shoe_size'"
    )
