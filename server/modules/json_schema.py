"""The JSON Schemas a module definition carries (one trial, the summary): what they may be.

A JSON Schema given here is checked three ways before it is stored: against the draft-07
meta-schema (which also accepts the 2019-09 / 2020-12 core keywords this needs), for a
remote `$ref` (refused: compiling must never fetch a URL), and by compiling it with
fastjsonschema, the validator the submit path uses. Then it must describe an object whose
property names can be export columns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Annotated, Any, NoReturn

import fastjsonschema
import orjson
from pydantic import AfterValidator

# Trial and summary property names become export columns: plain snake_case only.
FIELD_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_FIELD_NAME_RE = re.compile(FIELD_NAME)
MAX_SCHEMA_CHARS = 64_000

ACCEPTED_DRAFTS = frozenset(
    {
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    }
)

Validator = Callable[[Any], Any]


class _NoRemoteRefs(Mapping[str, Callable[[str], Any]]):
    """fastjsonschema's handlers, for every URI scheme: a remote `$ref` is never fetched."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return self._refuse

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    @staticmethod
    def _refuse(uri: str) -> NoReturn:
        raise fastjsonschema.JsonSchemaDefinitionException(
            f"$ref {uri!r} points outside the schema; only local references (#/...) are allowed"
        )


NO_REMOTE_REFS = _NoRemoteRefs()

# The draft-07 meta-schema without its defaults (fastjsonschema would write them into the
# schema under test) and with `$defs`, so 2020-12 style definitions are checked too.
_SUBSCHEMA: dict[str, Any] = {"$ref": "#"}
_SCHEMA_ARRAY: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"$ref": "#"}}
_NON_NEGATIVE: dict[str, Any] = {"type": "integer", "minimum": 0}
_STRING_ARRAY: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
_SCHEMA_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"$ref": "#"}}
_SIMPLE_TYPES: dict[str, Any] = {
    "enum": ["array", "boolean", "integer", "null", "number", "object", "string"]
}
META_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": ["object", "boolean"],
    "properties": {
        "$id": {"type": "string"},
        "$schema": {"type": "string"},
        "$ref": {"type": "string"},
        "$comment": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "readOnly": {"type": "boolean"},
        "examples": {"type": "array"},
        "multipleOf": {"type": "number", "exclusiveMinimum": 0},
        "maximum": {"type": "number"},
        "exclusiveMaximum": {"type": "number"},
        "minimum": {"type": "number"},
        "exclusiveMinimum": {"type": "number"},
        "maxLength": _NON_NEGATIVE,
        "minLength": _NON_NEGATIVE,
        "pattern": {"type": "string", "format": "regex"},
        "additionalItems": _SUBSCHEMA,
        "items": {"anyOf": [_SUBSCHEMA, _SCHEMA_ARRAY]},
        "maxItems": _NON_NEGATIVE,
        "minItems": _NON_NEGATIVE,
        "uniqueItems": {"type": "boolean"},
        "contains": _SUBSCHEMA,
        "maxProperties": _NON_NEGATIVE,
        "minProperties": _NON_NEGATIVE,
        "required": _STRING_ARRAY,
        "additionalProperties": _SUBSCHEMA,
        "definitions": _SCHEMA_MAP,
        "$defs": _SCHEMA_MAP,
        "properties": _SCHEMA_MAP,
        "patternProperties": {**_SCHEMA_MAP, "propertyNames": {"format": "regex"}},
        "dependencies": {
            "type": "object",
            "additionalProperties": {"anyOf": [_SUBSCHEMA, _STRING_ARRAY]},
        },
        "propertyNames": _SUBSCHEMA,
        "enum": {"type": "array"},
        "type": {
            "anyOf": [
                _SIMPLE_TYPES,
                {"type": "array", "items": _SIMPLE_TYPES, "minItems": 1, "uniqueItems": True},
            ]
        },
        "format": {"type": "string"},
        "contentMediaType": {"type": "string"},
        "contentEncoding": {"type": "string"},
        "if": _SUBSCHEMA,
        "then": _SUBSCHEMA,
        "else": _SUBSCHEMA,
        "allOf": _SCHEMA_ARRAY,
        "anyOf": _SCHEMA_ARRAY,
        "oneOf": _SCHEMA_ARRAY,
        "not": _SUBSCHEMA,
    },
}


@cache
def _meta_validator() -> Validator:
    return fastjsonschema.compile(META_SCHEMA, handlers=NO_REMOTE_REFS, use_default=False)


def compile_schema(schema: dict[str, Any]) -> Validator:
    """A validator for a stored schema; raises ValueError saying what is wrong with it.

    Defaults in the schema are not written into validated data: a submission is stored
    as it was received.
    """
    try:
        _meta_validator()(schema)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise ValueError(f"not a valid JSON Schema: {_schema_path(exc.message)}") from None
    try:
        return fastjsonschema.compile(schema, handlers=NO_REMOTE_REFS, use_default=False)
    except (
        fastjsonschema.JsonSchemaException,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        re.error,
        RecursionError,
    ) as exc:
        raise ValueError(f"not a valid JSON Schema: {_schema_path(str(exc))}") from None


def _schema_path(message: str) -> str:
    # fastjsonschema names the checked document "data"; here that document is the schema.
    return re.sub(r"^data\b", "schema", message)


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema for trial or summary records, that compiles."""
    try:
        size = len(json.dumps(schema, allow_nan=False))
    except ValueError:
        raise ValueError("must be plain JSON (no NaN or Infinity)") from None
    try:
        # What the database column will be written with; it refuses integers past 64 bits.
        orjson.dumps(schema)
    except TypeError:
        raise ValueError("numbers must fit in 64 bits") from None
    if size > MAX_SCHEMA_CHARS:
        raise ValueError(f"is larger than {MAX_SCHEMA_CHARS} characters of JSON")
    draft = schema.get("$schema")
    if draft is not None and draft not in ACCEPTED_DRAFTS:
        raise ValueError("$schema must be JSON Schema draft-07, 2019-09 or 2020-12")
    compile_schema(schema)
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise ValueError('must describe an object: {"type": "object", "properties": {...}}')
    properties: dict[str, Any] = schema["properties"]
    if not properties:
        raise ValueError("must declare at least one property")
    bad = [name for name in properties if not _FIELD_NAME_RE.match(name)]
    if bad:
        raise ValueError(f"property names must be snake_case identifiers: {', '.join(bad)}")
    return schema


JsonSchema = Annotated[dict[str, Any], AfterValidator(check_json_schema)]
