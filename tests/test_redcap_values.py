"""How a submission's values are written into REDCap fields: what REDCap's validation of each
field type accepts (numbers positional, decimals to the field's places, local dates)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.redcap.records import format_value

LATE_EVENING = datetime(2026, 1, 5, 23, 30, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "validation", "expected"),
    [
        (0.85, "number", "0.85"),
        (1e-05, "number", "0.00001"),  # never an exponent
        (1.5e16, "number", "15000000000000000"),
        (250.0, "number", "250.0"),
        (250.0, "integer", "250"),
        (3.14159, "number_2dp", "3.14"),
        (3, "number_1dp", "3.0"),
        (12, "integer", "12"),
        (True, "integer", "1"),
        (float("nan"), "number", None),
        (float("inf"), "number_2dp", None),
        ("  7 ", "number", "7"),
    ],
)
def test_numbers(value: object, validation: str, expected: str | None) -> None:
    assert format_value("number", value, validation, "UTC") == expected


@pytest.mark.parametrize(
    ("kind", "validation", "timezone", "expected"),
    [
        ("date", "date_ymd", "Europe/Berlin", "2026-01-06"),  # the participant's own day
        ("datetime", "date_ymd", "America/New_York", "2026-01-05"),
        ("datetime", "datetime_ymd", "Europe/Berlin", "2026-01-06 00:30"),
        ("datetime", "datetime_seconds_ymd", "Europe/Berlin", "2026-01-06 00:30:15"),
        ("datetime", "", "Not/AZone", "2026-01-05 23:30:15"),  # unknown zone: UTC
    ],
)
def test_dates_are_the_participants_local_time(
    kind: str, validation: str, timezone: str, expected: str
) -> None:
    assert format_value(kind, LATE_EVENING, validation, timezone) == expected  # type: ignore[arg-type]


def test_text_is_trimmed_and_blank_is_left_out() -> None:
    assert format_value("text", " Pixel 8 ", "", "UTC") == "Pixel 8"
    assert format_value("text", "   ", "", "UTC") is None
    assert format_value("text", None, "", "UTC") is None
