"""Checks REDCap applies to one imported value: validation types, ranges, choice codes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime

from .fields import Field, choices

FORMAT_MESSAGE = (
    "The value you provided could not be validated because it does not follow the expected "
    "format. Please try again."
)
CATEGORY_MESSAGE = "The value is not a valid category for {field}"
RANGE_REJECTED = "The value you provided is outside the acceptable range ({low} - {high})."
RANGE_WARNING = (
    "The value you provided is outside the suggested range ({low} - {high}). "
    "This value will be admitted, but you might wish to double check it."
)
CHECKBOX_MESSAGE = "The value for a checkbox field must be 0 (unchecked) or 1 (checked)"
FORCE_MINMAX = "@FORCE-MINMAX"

# Legacy validation names that REDCap still stores in old data dictionaries.
_ALIASES = {"int": "integer", "float": "number", "date": "date_ymd", "datetime": "datetime_ymd"}

_PATTERNS: dict[str, str] = {
    "integer": r"[-+]?\d+",
    "number": r"[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?",
    "number_comma_decimal": r"[-+]?[0-9]*,?[0-9]+([eE][-+]?[0-9]+)?",
    "date_ymd": r"\d{4}-\d{2}-\d{2}",
    "datetime_ymd": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}",
    "datetime_seconds_ymd": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    "time": r"([01]?\d|2[0-3]):[0-5]\d",
    "time_hh_mm_ss": r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d",
    "time_mm_ss": r"[0-5]\d:[0-5]\d",
    "email": r"[^@\s\"',;<>]+@[^@\s\"',;<>]+\.[A-Za-z0-9-]{2,}",
    "alpha_only": r"[A-Za-z]+",
    "zipcode": r"\d{5}(-\d{4})?",
    "phone": r"\(?\d{3}\)?[-. ]?\d{3}[-. ]?\d{4}",
}
for _places in range(1, 5):
    _PATTERNS[f"number_{_places}dp"] = rf"[-+]?\d+\.\d{{{_places}}}"
    _PATTERNS[f"number_{_places}dp_comma_decimal"] = rf"[-+]?\d+,\d{{{_places}}}"

_DATE_FORMATS = {
    "date_ymd": "%Y-%m-%d",
    "datetime_ymd": "%Y-%m-%d %H:%M",
    "datetime_seconds_ymd": "%Y-%m-%d %H:%M:%S",
}


@dataclass(frozen=True)
class Verdict:
    """Outcome of one value: an error rejects the whole call, a warning is only logged."""

    error: str | None = None
    warning: str | None = None


OK = Verdict()


def validation_type(row: Field) -> str:
    raw = row["text_validation_type_or_show_slider_number"]
    return _ALIASES.get(raw, raw)


def _is_numeric_type(kind: str) -> bool:
    return kind == "integer" or kind.startswith("number")


def _as_number(text: str) -> float:
    return float(text.replace(",", "."))


def _bound(text: str, kind: str) -> str:
    """Resolve "today" / "now" bounds the way REDCap does for date fields."""
    if text == "today":
        return date.today().isoformat()
    if text == "now":
        return datetime.now().strftime(_DATE_FORMATS.get(kind, "%Y-%m-%d %H:%M:%S"))
    return text


def _out_of_range(value: str, kind: str, low: str, high: str) -> bool:
    if _is_numeric_type(kind):
        number = _as_number(value)
        return (low != "" and number < _as_number(low)) or (
            high != "" and number > _as_number(high)
        )
    if kind in _DATE_FORMATS or kind.startswith("time"):
        # ISO strings of one format compare chronologically.
        return (low != "" and value < low[: len(value)]) or (
            high != "" and value > high[: len(value)]
        )
    return False


def _check_format(value: str, kind: str) -> bool:
    pattern = _PATTERNS.get(kind)
    if pattern is None:
        return True  # unknown/free validation types are not checked
    if not re.fullmatch(pattern, value):
        return False
    if kind in _DATE_FORMATS:
        try:
            datetime.strptime(value, _DATE_FORMATS[kind])
        except ValueError:
            return False
    return True


def check_text(row: Field, value: str) -> Verdict:
    kind = validation_type(row)
    if not kind:
        return OK
    if not _check_format(value, kind):
        return Verdict(error=FORMAT_MESSAGE)
    low = _bound(row["text_validation_min"], kind)
    high = _bound(row["text_validation_max"], kind)
    if (low or high) and _out_of_range(value, kind, low, high):
        shown = (low or "no limit", high or "no limit")
        if FORCE_MINMAX in row["field_annotation"]:
            return Verdict(error=RANGE_REJECTED.format(low=shown[0], high=shown[1]))
        return Verdict(warning=RANGE_WARNING.format(low=shown[0], high=shown[1]))
    return OK


def check_slider(row: Field, value: str) -> Verdict:
    if not re.fullmatch(r"-?\d+", value):
        return Verdict(error=FORMAT_MESSAGE)
    low = int(row["text_validation_min"] or 0)
    high = int(row["text_validation_max"] or 100)
    if not low <= int(value) <= high:
        return Verdict(error=RANGE_REJECTED.format(low=low, high=high))
    return OK


def check_value(row: Field, value: str, choice: str | None = None) -> Verdict:
    """Validate a non-blank value for a field (choice set for a checkbox column)."""
    field_type = row["field_type"]
    if field_type == "checkbox":
        return OK if value in ("0", "1") else Verdict(error=CHECKBOX_MESSAGE)
    if choices(row):
        codes = {code for code, _ in choices(row)}
        if value in codes:
            return OK
        return Verdict(error=CATEGORY_MESSAGE.format(field=row["field_name"]))
    if field_type == "slider":
        return check_slider(row, value)
    if field_type == "text":
        return check_text(row, value)
    return OK


def check_complete(form: str, value: str) -> Verdict:
    if value in ("0", "1", "2"):
        return OK
    return Verdict(error=CATEGORY_MESSAGE.format(field=f"{form}_complete"))


def convert_date(value: str, kind: str, date_format: str) -> str:
    """Turn an MDY/DMY import value into REDCap's stored Y-M-D form (unchanged if it fails)."""
    if date_format not in ("MDY", "DMY") or kind not in _DATE_FORMATS:
        return value
    match = re.fullmatch(r"(\d{1,2})[/-](\d{1,2})[/-](\d{4})(.*)", value)
    if not match:
        return value
    first, second, year, rest = match.groups()
    month, day = (first, second) if date_format == "MDY" else (second, first)
    return f"{year}-{int(month):02d}-{int(day):02d}{rest}"
