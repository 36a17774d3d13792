"""The built-in questionnaire: the 9-item mood item bank and the module that scores it, each
as the definition of its published version 1.

A published version never changes: to change one, add a definition with the next `version`,
never edit one that has shipped. The module names its item bank by id, which only the loader
knows (server.modules.builtin), hence a function.
"""

from __future__ import annotations

import uuid
from typing import Any

from server.modules.builtin_blocks import TRIAL_INDEX, metric, norms, record
from server.modules.models import ModuleKind

# The source of the total score's psychometrics; see builtin_blocks.norms for what they are.
_MOOD_SOURCE = (
    "By analogy with the PHQ-9: 48-hour retest r 0.84, Kroenke, Spitzer & Williams 2001 "
    "(J Gen Intern Med 16:606); SD ~5 points in primary care"
)

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
        "trial_schema": record(
            {
                "trial_index": TRIAL_INDEX,
                "item_id": {"type": "string", "enum": [i for i, _, _ in _MOOD_STEMS]},
                "response_code": {"type": "integer", "minimum": 0, "maximum": 3},
                "rt_ms": {"type": "number", "minimum": 0},
            }
        ),
        "summary_schema": record(
            {
                "total_score": {"type": "integer", "minimum": 0, "maximum": 27},
                "n_items_answered": {"type": "integer", "minimum": 0, "maximum": 9},
            }
        ),
        "metrics": [
            # Higher is worse: a symptom total (m5 and m8 reverse-scored into it).
            norms(
                metric("total_score", "points", "Total score"),
                higher_is_better=False,
                r=0.84,
                sd=5.0,
                source=_MOOD_SOURCE,
                normal=(0.0, 9.0, "PHQ-9 bands: minimal to mild, 0-9 (Kroenke et al. 2001)"),
            ),
            metric("n_items_answered", "count", "Items answered", "count"),
        ],
        "item_bank_id": item_bank_id,
    }
