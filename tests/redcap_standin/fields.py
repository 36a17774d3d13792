"""REDCap data-dictionary rows: the 18 metadata keys, choices and export names."""

from __future__ import annotations

import re

METADATA_KEYS: tuple[str, ...] = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)

Field = dict[str, str]
"""One data-dictionary row, exactly as REDCap exports it (all 18 keys, string values)."""

CHOICE_TYPES = frozenset({"radio", "dropdown", "checkbox", "yesno", "truefalse"})
NO_DATA_TYPES = frozenset({"descriptive"})

_FIXED_CHOICES: dict[str, list[tuple[str, str]]] = {
    "yesno": [("1", "Yes"), ("0", "No")],
    "truefalse": [("1", "True"), ("0", "False")],
}


def field(
    name: str,
    form: str,
    label: str,
    field_type: str = "text",
    *,
    validation: str = "",
    minimum: str = "",
    maximum: str = "",
    choices: str = "",
    annotation: str = "",
    required: bool = False,
    note: str = "",
) -> Field:
    """Build a metadata row with every REDCap key present."""
    row = dict.fromkeys(METADATA_KEYS, "")
    row.update(
        field_name=name,
        form_name=form,
        field_type=field_type,
        field_label=label,
        select_choices_or_calculations=choices,
        field_note=note,
        text_validation_type_or_show_slider_number=validation,
        text_validation_min=minimum,
        text_validation_max=maximum,
        required_field="y" if required else "",
        field_annotation=annotation,
    )
    return row


def normalize(row: dict[str, object]) -> Field:
    """Fill missing metadata keys with "" and stringify values (keeps REDCap's key order)."""
    return {key: "" if row.get(key) is None else str(row.get(key)) for key in METADATA_KEYS}


def choices(row: Field) -> list[tuple[str, str]]:
    """(code, label) pairs of a choice field; [] for other field types."""
    field_type = row["field_type"]
    if field_type in _FIXED_CHOICES:
        return list(_FIXED_CHOICES[field_type])
    if field_type not in CHOICE_TYPES:
        return []
    pairs: list[tuple[str, str]] = []
    for part in row["select_choices_or_calculations"].split("|"):
        code, _, label = part.partition(",")
        if code.strip():
            pairs.append((code.strip(), label.strip()))
    return pairs


def checkbox_export_name(field_name: str, code: str) -> str:
    """REDCap's export column for one checkbox choice: lower-cased, non-alphanumerics as _."""
    return f"{field_name}___{re.sub(r'[^a-z0-9_]', '_', code.lower())}"


def export_names(row: Field) -> list[str]:
    """Columns a field occupies in a flat record export."""
    if row["field_type"] in NO_DATA_TYPES:
        return []
    if row["field_type"] == "checkbox":
        return [checkbox_export_name(row["field_name"], code) for code, _ in choices(row)]
    return [row["field_name"]]
