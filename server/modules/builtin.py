"""The built-in task catalogue: published module definitions every installation has.

A published version never changes. To change a built-in, add a new version here (a new
entry with the next `version`), never edit one that has shipped: `load_builtins` inserts
what is missing by key and version and leaves existing rows alone.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.item_banks import service as item_banks_service
from server.item_banks.models import ItemBank
from server.item_banks.schemas import ItemBankCreate
from server.modules import service
from server.modules.models import Module, ModuleKind
from server.modules.schemas import ModuleCreate

DRAFT = "https://json-schema.org/draft/2020-12/schema"

TRIAL_INDEX: dict[str, Any] = {"type": "integer", "minimum": 0}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
MS_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
PROPORTION_OR_NULL: dict[str, Any] = {"type": ["number", "null"], "minimum": 0, "maximum": 1}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """A closed record: every property required, nothing else allowed."""
    return {
        "$schema": DRAFT,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _metric(
    key: str,
    unit: str,
    label: str,
    op: str | None = None,
    field: str | None = None,
    where: dict[str, Any] | None = None,
) -> dict[str, Any]:
    derived = None if op is None else {"op": op, "field": field, "where": where}
    return {"key": key, "unit": unit, "label": label, "derived_from": derived}


def _norms(
    metric: dict[str, Any],
    *,
    higher_is_better: bool,
    r: float | None = None,
    sd: float | None = None,
    source: str = "",
    normal: tuple[float, float, str] | None = None,
) -> dict[str, Any]:
    """A metric with what reports need to read it: its direction, the test-retest reliability
    and SD of the reliable change index (Jacobson & Truax 1991), a normal range."""
    out = {**metric, "higher_is_better": higher_is_better}
    if r is not None and sd is not None:
        out["reliability"] = {"test_retest_r": r, "sd": sd, "source": source}
    if normal is not None:
        out["normal_range"] = {"low": normal[0], "high": normal[1], "source": normal[2]}
    return out


# Psychometrics the built-in versions declare (reports: reliable change, normal ranges).
# They are values of the order the cited literature reports for comparable adult tasks, not
# this app's own norms: a study that needs exact figures declares its own module version.
_RT_SOURCE = (
    "Adult simple/choice RT means' test-retest r ~0.8 and between-person SD 50-70 ms, as in "
    "Deary, Liewald & Nissan 2011 (Behav Res Methods 43:258) and Falleti et al. 2006 "
    "(J Clin Exp Neuropsychol 28:1095)"
)
_CPT_SOURCE = "CPT d' and hit RT retest r ~0.7-0.8: Conners CPT 3 manual (Conners 2014)"
_SPAN_SOURCE = (
    "Digit span retest r ~0.8 (Wechsler 2008, WAIS-IV Technical Manual); raw span SD ~1.2"
)
_MOOD_SOURCE = (
    "By analogy with the PHQ-9: 48-hour retest r 0.84, Kroenke, Spitzer & Williams 2001 "
    "(J Gen Intern Med 16:606); SD ~5 points in primary care"
)


def _rt_metrics(sd: float, normal: tuple[float, float, str] | None) -> list[dict[str, Any]]:
    better = {"mean_rt_ms": False, "median_rt_ms": False, "sd_rt_ms": False, "n_lapses": False}
    out = []
    for metric in _RT_METRICS:
        if metric["key"] == "mean_rt_ms":
            out.append(
                _norms(
                    metric, higher_is_better=False, r=0.80, sd=sd, source=_RT_SOURCE, normal=normal
                )
            )
        elif metric["key"] in better:
            out.append(_norms(metric, higher_is_better=better[metric["key"]]))
        else:
            out.append(metric)
    return out


# --- simple reaction time -------------------------------------------------------------------

_RT_TRIAL: dict[str, Any] = {
    "trial_index": TRIAL_INDEX,
    "stimulus_onset_ms": {"type": "number", "minimum": 0},
    # From stimulus onset; null without a response, negative for a response before onset.
    "rt_ms": MS_OR_NULL,
    "responded": {"type": "boolean"},
    "anticipation": {"type": "boolean"},
}
_RT_SUMMARY: dict[str, Any] = {
    "n_trials": COUNT,
    "n_valid": COUNT,
    "mean_rt_ms": MS_OR_NULL,
    "median_rt_ms": MS_OR_NULL,
    "sd_rt_ms": {"type": ["number", "null"], "minimum": 0},
    "n_lapses": COUNT,
}
_RT_METRICS = [
    _metric("n_trials", "count", "Trials", "count"),
    _metric(
        "n_valid",
        "count",
        "Valid responses",
        "count",
        where={"responded": True, "anticipation": False},
    ),
    _metric(
        "mean_rt_ms",
        "ms",
        "Mean reaction time (valid trials)",
        "mean",
        "rt_ms",
        where={"responded": True, "anticipation": False},
    ),
    _metric("median_rt_ms", "ms", "Median reaction time"),
    _metric("sd_rt_ms", "ms", "Reaction time SD"),
    _metric("n_lapses", "count", "Lapses (no response)", "count", where={"responded": False}),
]

SIMPLE_RT = {
    "key": "simple_rt",
    "version": 1,
    "kind": ModuleKind.cognitive,
    "name": "Simple reaction time",
    "description": (
        "Respond as fast as possible when the stimulus appears. A valid trial has a "
        "response that is not an anticipation; a lapse has no response. Mean, median and SD "
        "of reaction time are over the valid trials."
    ),
    "trial_schema": _object(_RT_TRIAL),
    "summary_schema": _object(_RT_SUMMARY),
    # Normal range: healthy adults' mean simple RT (Deary, Liewald & Nissan 2011).
    "metrics": _rt_metrics(50.0, (180.0, 350.0, "Deary, Liewald & Nissan 2011")),
}

# --- choice reaction time -------------------------------------------------------------------

CHOICE_RT = {
    "key": "choice_rt",
    "version": 1,
    "kind": ModuleKind.cognitive,
    "name": "Choice reaction time",
    "description": (
        "Press the response matching the stimulus, as fast as possible. Accuracy is the "
        "share of trials answered correctly; reaction times are over trials with a response."
    ),
    "trial_schema": _object(
        {
            **_RT_TRIAL,
            "stimulus": {"type": "string", "minLength": 1, "maxLength": 64},
            "response": {"type": ["string", "null"], "maxLength": 64},
            "correct": {"type": "boolean"},
        }
    ),
    "summary_schema": _object({**_RT_SUMMARY, "n_correct": COUNT, "accuracy": PROPORTION_OR_NULL}),
    "metrics": [
        *_rt_metrics(70.0, None),
        _metric("n_correct", "count", "Correct responses", "count", where={"correct": True}),
        _norms(
            _metric("accuracy", "proportion", "Accuracy", "proportion", "correct"),
            higher_is_better=True,
        ),
    ],
}

# --- continuous performance test ------------------------------------------------------------

CPT = {
    "key": "cpt",
    "version": 1,
    "kind": ModuleKind.cognitive,
    "name": "Continuous performance test",
    "description": (
        "Respond to targets, withhold a response to non-targets. Hit rate is over target "
        "trials, false-alarm rate over non-target trials; d' is z(hit rate) - z(false-alarm "
        "rate) with the log-linear correction ((n + 0.5) / (N + 1)) for rates of 0 or 1."
    ),
    "trial_schema": _object(
        {
            "trial_index": TRIAL_INDEX,
            "stimulus": {"type": "string", "minLength": 1, "maxLength": 64},
            "target": {"type": "boolean"},
            "responded": {"type": "boolean"},
            "correct": {"type": "boolean"},
            "rt_ms": MS_OR_NULL,
        }
    ),
    "summary_schema": _object(
        {
            "n_trials": COUNT,
            "hits": COUNT,
            "misses": COUNT,
            "false_alarms": COUNT,
            "correct_rejections": COUNT,
            "hit_rate": PROPORTION_OR_NULL,
            "false_alarm_rate": PROPORTION_OR_NULL,
            "d_prime": {"type": ["number", "null"]},
            "mean_hit_rt_ms": MS_OR_NULL,
        }
    ),
    "metrics": [
        _metric("n_trials", "count", "Trials", "count"),
        _metric("hits", "count", "Hits", "count", where={"target": True, "responded": True}),
        _metric("misses", "count", "Misses", "count", where={"target": True, "responded": False}),
        _metric(
            "false_alarms",
            "count",
            "False alarms",
            "count",
            where={"target": False, "responded": True},
        ),
        _metric(
            "correct_rejections",
            "count",
            "Correct rejections",
            "count",
            where={"target": False, "responded": False},
        ),
        _metric("hit_rate", "proportion", "Hit rate", "proportion", "responded", {"target": True}),
        _metric(
            "false_alarm_rate",
            "proportion",
            "False-alarm rate",
            "proportion",
            "responded",
            {"target": False},
        ),
        _norms(
            _metric("d_prime", "z", "Sensitivity (d')"),
            higher_is_better=True,
            r=0.70,
            sd=0.80,
            source=_CPT_SOURCE,
        ),
        _norms(
            _metric(
                "mean_hit_rt_ms",
                "ms",
                "Mean reaction time on hits",
                "mean",
                "rt_ms",
                {"target": True, "responded": True},
            ),
            higher_is_better=False,
            r=0.80,
            sd=60.0,
            source=_CPT_SOURCE,
        ),
    ],
}

# --- digit span -----------------------------------------------------------------------------

_DIGITS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 9},
    "maxItems": 20,
}

DIGIT_SPAN = {
    "key": "digit_span",
    "version": 1,
    "kind": ModuleKind.cognitive,
    "name": "Digit span",
    "description": (
        "Repeat a sequence of digits, forwards or backwards. The longest span in each "
        "direction is the longest sequence recalled correctly (null if none was)."
    ),
    "trial_schema": _object(
        {
            "trial_index": TRIAL_INDEX,
            "direction": {"type": "string", "enum": ["forward", "backward"]},
            "span_length": {"type": "integer", "minimum": 1, "maximum": 20},
            "sequence": {**_DIGITS, "minItems": 1},
            "response": _DIGITS,
            "correct": {"type": "boolean"},
        }
    ),
    "summary_schema": _object(
        {
            "longest_span_forward": {"type": ["integer", "null"], "minimum": 0},
            "longest_span_backward": {"type": ["integer", "null"], "minimum": 0},
            "total_correct": COUNT,
        }
    ),
    "metrics": [
        _norms(
            _metric(
                "longest_span_forward",
                "digits",
                "Longest span forward",
                "max",
                "span_length",
                {"direction": "forward", "correct": True},
            ),
            higher_is_better=True,
            r=0.80,
            sd=1.2,
            source=_SPAN_SOURCE,
        ),
        _norms(
            _metric(
                "longest_span_backward",
                "digits",
                "Longest span backward",
                "max",
                "span_length",
                {"direction": "backward", "correct": True},
            ),
            higher_is_better=True,
            r=0.80,
            sd=1.2,
            source=_SPAN_SOURCE,
        ),
        _metric("total_correct", "count", "Sequences correct", "count", where={"correct": True}),
    ],
}

# --- mood questionnaire ---------------------------------------------------------------------

_FREQUENCY = [
    {"code": 0, "label": "Not at all"},
    {"code": 1, "label": "Several days"},
    {"code": 2, "label": "More than half the days"},
    {"code": 3, "label": "Nearly every day"},
]
_MOOD_STEMS = [
    ("m1", "Feeling down, low or sad", False),
    ("m2", "Feeling nervous, anxious or on edge", False),
    ("m3", "Feeling tired or having little energy", False),
    ("m4", "Trouble falling asleep, staying asleep, or sleeping too much", False),
    ("m5", "Feeling calm and relaxed", True),
    ("m6", "Trouble concentrating on things", False),
    ("m7", "Feeling irritable or easily annoyed", False),
    ("m8", "Feeling hopeful about the future", True),
    ("m9", "Worrying too much about different things", False),
]
MOOD9_ITEM_BANK = {
    "key": "mood9",
    "version": 1,
    "name": "Mood (9 items)",
    "description": (
        "Over the last two weeks, how often have you been ...? Items m5 and m8 are "
        "positively worded and reverse-scored (3 - code) in the total."
    ),
    "items": [
        {"item_id": item_id, "stem": stem, "options": _FREQUENCY, "reverse_scored": reverse}
        for item_id, stem, reverse in _MOOD_STEMS
    ],
}


def mood9_module(item_bank_id: uuid.UUID) -> dict[str, Any]:
    return {
        "key": "mood9",
        "version": 1,
        "kind": ModuleKind.questionnaire,
        "name": "Mood questionnaire (9 items)",
        "description": (
            "One trial per item answered. The total score sums the response codes with "
            "reverse-scored items counted as 3 - code, so it is not derived from the raw codes."
        ),
        "trial_schema": _object(
            {
                "trial_index": TRIAL_INDEX,
                "item_id": {"type": "string", "enum": [i for i, _, _ in _MOOD_STEMS]},
                "response_code": {"type": "integer", "minimum": 0, "maximum": 3},
                "rt_ms": {"type": "number", "minimum": 0},
            }
        ),
        "summary_schema": _object(
            {
                "total_score": {"type": "integer", "minimum": 0, "maximum": 27},
                "n_items_answered": {"type": "integer", "minimum": 0, "maximum": 9},
            }
        ),
        "metrics": [
            # Higher is worse: a symptom total (m5 and m8 reverse-scored into it).
            _norms(
                _metric("total_score", "points", "Total score"),
                higher_is_better=False,
                r=0.84,
                sd=5.0,
                source=_MOOD_SOURCE,
                normal=(0.0, 9.0, "PHQ-9 bands: minimal to mild, 0-9 (Kroenke et al. 2001)"),
            ),
            _metric("n_items_answered", "count", "Items answered", "count"),
        ],
        "item_bank_id": item_bank_id,
    }


COGNITIVE_MODULES = (SIMPLE_RT, CHOICE_RT, CPT, DIGIT_SPAN)
BUILTIN_KEYS = ("simple_rt", "choice_rt", "cpt", "digit_span", "mood9")


async def _load_item_bank(db: AsyncSession, definition: dict[str, Any]) -> ItemBank:
    item_bank_in = ItemBankCreate.model_validate(copy.deepcopy(definition))
    existing = await item_banks_service.get_by_key(
        db, key=item_bank_in.key, version=item_bank_in.version
    )
    if existing is not None:
        return existing
    item_bank = await item_banks_service.create(db, item_bank_in=item_bank_in)
    return await item_banks_service.publish(db, item_bank=item_bank)


async def _load_module(db: AsyncSession, definition: dict[str, Any]) -> Module:
    # A copy: the rows must not share nested dicts with these module-level constants.
    module_in = ModuleCreate.model_validate(copy.deepcopy(definition))
    existing = await service.get_by_key(db, key=module_in.key, version=module_in.version)
    if existing is not None:
        return existing
    module = await service.create(db, module_in=module_in)
    return await service.publish(db, module=module)


async def load_builtins(db: AsyncSession) -> dict[str, Module]:
    """Insert the built-in item bank and modules that are missing, published; by key.

    Idempotent by key and version: rows that exist are returned as they are. Flushes,
    never commits.
    """
    mood9_bank = await _load_item_bank(db, MOOD9_ITEM_BANK)
    if mood9_bank.status != PublicationStatus.published:
        raise RuntimeError("item bank mood9 v1 exists as a draft; the built-ins need it published")
    modules = [await _load_module(db, d) for d in COGNITIVE_MODULES]
    modules.append(await _load_module(db, mood9_module(mood9_bank.id)))
    return {m.key: m for m in modules}
