"""The built-in cognitive tasks: simple and choice reaction time, the continuous performance
test and digit span, each as the definition of its published version 1.

A published version never changes: to change one, add a definition with the next `version`
(and list it in COGNITIVE_MODULES), never edit one that has shipped.
"""

from __future__ import annotations

from typing import Any

from server.modules.builtin_blocks import (
    COUNT,
    MS_OR_NULL,
    PROPORTION_OR_NULL,
    TRIAL_INDEX,
    metric,
    norms,
    record,
)
from server.modules.models import ModuleKind

# The sources of the psychometrics these versions declare (reports: reliable change, normal
# ranges); see builtin_blocks.norms for what the figures are.
_RT_SOURCE = (
    "Adult simple/choice RT means' test-retest r ~0.8 and between-person SD 50-70 ms, as in "
    "Deary, Liewald & Nissan 2011 (Behav Res Methods 43:258) and Falleti et al. 2006 "
    "(J Clin Exp Neuropsychol 28:1095)"
)
_CPT_SOURCE = "CPT d' and hit RT retest r ~0.7-0.8: Conners CPT 3 manual (Conners 2014)"
_SPAN_SOURCE = (
    "Digit span retest r ~0.8 (Wechsler 2008, WAIS-IV Technical Manual); raw span SD ~1.2"
)


def _rt_metrics(sd: float, normal: tuple[float, float, str] | None) -> list[dict[str, Any]]:
    better = {"mean_rt_ms": False, "median_rt_ms": False, "sd_rt_ms": False, "n_lapses": False}
    out = []
    for entry in _RT_METRICS:
        if entry["key"] == "mean_rt_ms":
            out.append(
                norms(
                    entry, higher_is_better=False, r=0.80, sd=sd, source=_RT_SOURCE, normal=normal
                )
            )
        elif entry["key"] in better:
            out.append(norms(entry, higher_is_better=better[entry["key"]]))
        else:
            out.append(entry)
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
    metric("n_trials", "count", "Trials", "count"),
    metric(
        "n_valid",
        "count",
        "Valid responses",
        "count",
        where={"responded": True, "anticipation": False},
    ),
    metric(
        "mean_rt_ms",
        "ms",
        "Mean reaction time (valid trials)",
        "mean",
        "rt_ms",
        where={"responded": True, "anticipation": False},
    ),
    metric("median_rt_ms", "ms", "Median reaction time"),
    metric("sd_rt_ms", "ms", "Reaction time SD"),
    metric("n_lapses", "count", "Lapses (no response)", "count", where={"responded": False}),
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
    "trial_schema": record(_RT_TRIAL),
    "summary_schema": record(_RT_SUMMARY),
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
    "trial_schema": record(
        {
            **_RT_TRIAL,
            "stimulus": {"type": "string", "minLength": 1, "maxLength": 64},
            "response": {"type": ["string", "null"], "maxLength": 64},
            "correct": {"type": "boolean"},
        }
    ),
    "summary_schema": record({**_RT_SUMMARY, "n_correct": COUNT, "accuracy": PROPORTION_OR_NULL}),
    "metrics": [
        *_rt_metrics(70.0, None),
        metric("n_correct", "count", "Correct responses", "count", where={"correct": True}),
        norms(
            metric("accuracy", "proportion", "Accuracy", "proportion", "correct"),
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
    "trial_schema": record(
        {
            "trial_index": TRIAL_INDEX,
            "stimulus": {"type": "string", "minLength": 1, "maxLength": 64},
            "target": {"type": "boolean"},
            "responded": {"type": "boolean"},
            "correct": {"type": "boolean"},
            "rt_ms": MS_OR_NULL,
        }
    ),
    "summary_schema": record(
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
        metric("n_trials", "count", "Trials", "count"),
        metric("hits", "count", "Hits", "count", where={"target": True, "responded": True}),
        metric("misses", "count", "Misses", "count", where={"target": True, "responded": False}),
        metric(
            "false_alarms",
            "count",
            "False alarms",
            "count",
            where={"target": False, "responded": True},
        ),
        metric(
            "correct_rejections",
            "count",
            "Correct rejections",
            "count",
            where={"target": False, "responded": False},
        ),
        metric("hit_rate", "proportion", "Hit rate", "proportion", "responded", {"target": True}),
        metric(
            "false_alarm_rate",
            "proportion",
            "False-alarm rate",
            "proportion",
            "responded",
            {"target": False},
        ),
        norms(
            metric("d_prime", "z", "Sensitivity (d')"),
            higher_is_better=True,
            r=0.70,
            sd=0.80,
            source=_CPT_SOURCE,
        ),
        norms(
            metric(
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
    "trial_schema": record(
        {
            "trial_index": TRIAL_INDEX,
            "direction": {"type": "string", "enum": ["forward", "backward"]},
            "span_length": {"type": "integer", "minimum": 1, "maximum": 20},
            "sequence": {**_DIGITS, "minItems": 1},
            "response": _DIGITS,
            "correct": {"type": "boolean"},
        }
    ),
    "summary_schema": record(
        {
            "longest_span_forward": {"type": ["integer", "null"], "minimum": 0},
            "longest_span_backward": {"type": ["integer", "null"], "minimum": 0},
            "total_correct": COUNT,
        }
    ),
    "metrics": [
        norms(
            metric(
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
        norms(
            metric(
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
        metric("total_correct", "count", "Sequences correct", "count", where={"correct": True}),
    ],
}

COGNITIVE_MODULES = (SIMPLE_RT, CHOICE_RT, CPT, DIGIT_SPAN)
