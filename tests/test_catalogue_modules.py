"""The task catalogue: modules and item banks, their life cycle, and the built-ins."""

from __future__ import annotations

import copy
import statistics
import uuid
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.core.catalogue import PublicationStatus
from server.core.config import Settings
from server.item_banks.models import ItemBank
from server.modules.builtin import BUILTIN_KEYS, load_builtins
from server.modules.models import Module
from server.scoring.compare import compare
from server.scoring.scorers import ScoringInput, scorer_for
from server.submissions.schemas import TaskIn
from server.submissions.validation import check_task, compile_module
from tests import factories

TRIAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "trial_index": {"type": "integer", "minimum": 0},
        "rt_ms": {"type": ["number", "null"]},
        "responded": {"type": "boolean"},
        "side": {"type": "string", "enum": ["left", "right"]},
    },
    "required": ["trial_index", "rt_ms", "responded"],
    "additionalProperties": False,
}
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n_trials": {"type": "integer", "minimum": 0},
        "mean_rt_ms": {"type": ["number", "null"]},
        "label": {"type": "string"},
    },
    "required": ["n_trials", "mean_rt_ms"],
    "additionalProperties": False,
}
METRICS: list[dict[str, Any]] = [
    {"key": "n_trials", "unit": "count", "label": "Trials", "derived_from": {"op": "count"}},
    {
        "key": "mean_rt_ms",
        "unit": "ms",
        "label": "Mean RT",
        "derived_from": {"op": "mean", "field": "rt_ms", "where": {"responded": True}},
    },
]


def module_body(key: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key or f"task_{uuid.uuid4().hex[:8]}",
        "kind": "cognitive",
        "name": "A task",
        "description": "For tests.",
        "trial_schema": copy.deepcopy(TRIAL_SCHEMA),
        "summary_schema": copy.deepcopy(SUMMARY_SCHEMA),
        "metrics": copy.deepcopy(METRICS),
    }
    body.update(overrides)
    return body


def item_bank_body(key: str | None = None, **overrides: Any) -> dict[str, Any]:
    options = [{"code": 0, "label": "No"}, {"code": 1, "label": "Yes"}]
    body: dict[str, Any] = {
        "key": key or f"bank_{uuid.uuid4().hex[:8]}",
        "name": "A bank",
        "items": [
            {"item_id": "q1", "stem": "Slept well?", "options": options},
            {"item_id": "q2", "stem": "Felt rested?", "options": options, "reverse_scored": True},
        ],
    }
    body.update(overrides)
    return body


@pytest.fixture
async def admin(db: AsyncSession, settings: Settings) -> dict[str, str]:
    return await factories.auth_headers(
        db, settings, await factories.create_user(db, is_admin=True)
    )


@pytest.fixture
async def staff(db: AsyncSession, settings: Settings) -> dict[str, str]:
    return await factories.auth_headers(db, settings, await factories.create_user(db))


def locs(response: Any) -> list[list[Any]]:
    return [d["loc"] for d in response.json()["details"]]


async def test_module_life_cycle_and_immutability(
    client: AsyncClient, admin: dict[str, str], staff: dict[str, str]
) -> None:
    body = module_body()
    created = await client.post("/api/modules", json=body, headers=admin)
    assert created.status_code == 201, created.text
    module = created.json()
    assert (module["version"], module["status"], module["published_at"]) == (1, "draft", None)
    # Tolerances are stored filled in: the rule says exactly what the submit path enforces.
    derived = [m["derived_from"] for m in module["metrics"]]
    assert derived == [
        {"op": "count", "field": None, "where": None, "tolerance": 0.0},
        {"op": "mean", "field": "rt_ms", "where": {"responded": True}, "tolerance": 0.5},
    ]
    url = f"/api/modules/{module['id']}"

    again = await client.post("/api/modules", json=body, headers=admin)
    assert again.status_code == 409 and again.json()["error_code"] == "module_version_taken"

    renamed = await client.patch(url, json={"name": "Renamed"}, headers=admin)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Renamed"

    published = await client.post(f"{url}/publish", json={}, headers=admin)
    assert published.status_code == 200
    assert published.json()["status"] == "published" and published.json()["published_at"]

    frozen = await client.patch(url, json={"name": "Changed"}, headers=admin)
    assert frozen.status_code == 409
    assert frozen.json()["error_code"] == "module_published"
    assert frozen.json()["message"] == "a published version is immutable; create a new version"
    assert (await client.post(f"{url}/publish", headers=admin)).status_code == 409

    version = await client.post(f"{url}/versions", headers=admin)
    assert version.status_code == 201, version.text
    v2 = version.json()
    assert (v2["key"], v2["version"], v2["status"]) == (body["key"], 2, "draft")
    assert v2["trial_schema"] == module["trial_schema"] and v2["metrics"] == module["metrics"]
    edited = await client.patch(
        f"/api/modules/{v2['id']}", json={"description": "Second edition"}, headers=admin
    )
    assert edited.status_code == 200 and edited.json()["description"] == "Second edition"
    # Numbered past the highest version, whichever version it is copied from.
    v3 = (await client.post(f"{url}/versions", headers=admin)).json()
    assert v3["version"] == 3

    # Any staff user reads the catalogue; only administrators change it.
    listed = await client.get("/api/modules", params={"key": body["key"]}, headers=staff)
    assert [m["version"] for m in listed.json()] == [1, 2, 3]
    only_published = await client.get(
        "/api/modules", params={"key": body["key"], "status": "published"}, headers=staff
    )
    assert [m["version"] for m in only_published.json()] == [1]
    assert (await client.get(url, headers=staff)).json()["name"] == "Renamed"
    assert (await client.post("/api/modules", json=module_body(), headers=staff)).status_code == 403
    assert (await client.patch(url, json={}, headers=staff)).status_code == 403
    assert (await client.post(f"{url}/versions", headers=staff)).status_code == 403
    assert (await client.get(url)).status_code == 401
    assert (await client.get(f"/api/modules/{uuid.uuid4()}", headers=staff)).status_code == 404


@pytest.mark.parametrize(
    ("field", "schema"),
    [
        ("trial_schema", {"type": "object", "properties": {"rt_ms": {"type": "nonsense"}}}),
        ("trial_schema", {"type": "object", "properties": {"rt_ms": {"pattern": "["}}}),
        ("trial_schema", {"type": "object", "properties": 5}),
        ("trial_schema", {"type": "object", "properties": {"x": {"$ref": "#/nope"}}}),
        # Compiling never fetches a URL: a remote $ref is refused, not followed.
        ("trial_schema", {"type": "object", "properties": {"x": {"$ref": "http://10.0.0.1/s"}}}),
        ("trial_schema", {"type": "array", "items": {"type": "number"}}),
        ("trial_schema", {"type": "object", "properties": {"Bad Name": {"type": "number"}}}),
        ("summary_schema", {"type": "object", "required": "n_trials", "properties": {}}),
        ("summary_schema", {"$schema": "http://json-schema.org/draft-04/schema#"}),
    ],
)
async def test_invalid_json_schema_is_422_naming_the_field(
    client: AsyncClient, admin: dict[str, str], field: str, schema: dict[str, Any]
) -> None:
    response = await client.post("/api/modules", json=module_body(**{field: schema}), headers=admin)
    assert response.status_code == 422, response.text
    assert ["body", field] in locs(response)


async def test_metrics_must_match_the_schemas(client: AsyncClient, admin: dict[str, str]) -> None:
    not_in_summary = module_body(
        metrics=[{"key": "accuracy", "unit": "proportion", "label": "Accuracy"}]
    )
    response = await client.post("/api/modules", json=not_in_summary, headers=admin)
    assert response.status_code == 422
    assert response.json()["error_code"] == "invalid_module_definition"
    assert locs(response) == [["body", "metrics", 0, "key"]]

    bad_rules = module_body(
        metrics=[
            {"key": "n_trials", "label": "N", "derived_from": {"op": "sum", "field": "nope"}},
            {
                "key": "mean_rt_ms",
                "label": "RT",
                "derived_from": {"op": "proportion", "field": "rt_ms", "where": {"ghost": 1}},
            },
            {
                "key": "label",
                "label": "Label",
                "derived_from": {"op": "count", "where": {"side": "up", "responded": 1}},
            },
        ]
    )
    response = await client.post("/api/modules", json=bad_rules, headers=admin)
    assert response.status_code == 422
    prefix = ["body", "metrics"]
    assert sorted(map(str, locs(response))) == sorted(
        map(
            str,
            [
                [*prefix, 0, "derived_from", "field"],  # not a trial field
                [*prefix, 1, "derived_from", "field"],  # proportion of a number
                [*prefix, 1, "derived_from", "where", "ghost"],  # not a trial field
                [*prefix, 2, "key"],  # a derived metric that is a string
                [*prefix, 2, "derived_from", "where", "side"],  # not in the enum
                [*prefix, 2, "derived_from", "where", "responded"],  # 1 is not a boolean
            ],
        )
    )

    for rule in ({"op": "count", "field": "rt_ms"}, {"op": "mean"}, {"op": "median"}):
        shape = module_body(metrics=[{"key": "n_trials", "label": "N", "derived_from": rule}])
        response = await client.post("/api/modules", json=shape, headers=admin)
        assert response.status_code == 422, rule
        assert locs(response)[0][:4] == ["body", "metrics", 0, "derived_from"]

    duplicate = module_body(metrics=[METRICS[0], METRICS[0]])
    response = await client.post("/api/modules", json=duplicate, headers=admin)
    assert locs(response) == [["body", "metrics", 1, "key"]]


async def test_patch_checks_the_draft_as_a_whole(
    client: AsyncClient, admin: dict[str, str]
) -> None:
    module = (await client.post("/api/modules", json=module_body(), headers=admin)).json()
    url = f"/api/modules/{module['id']}"
    # Dropping a property that a metric reports leaves the metric dangling.
    summary = copy.deepcopy(SUMMARY_SCHEMA)
    del summary["properties"]["mean_rt_ms"]
    summary["required"] = ["n_trials"]
    response = await client.patch(url, json={"summary_schema": summary}, headers=admin)
    assert response.status_code == 422
    assert locs(response) == [["body", "metrics", 1, "key"]]
    bad = await client.patch(url, json={"trial_schema": {"type": "bogus"}}, headers=admin)
    assert bad.status_code == 422 and ["body", "trial_schema"] in locs(bad)
    # Both together are consistent.
    ok = await client.patch(
        url, json={"summary_schema": summary, "metrics": METRICS[:1]}, headers=admin
    )
    assert ok.status_code == 200, ok.text
    assert [m["key"] for m in ok.json()["metrics"]] == ["n_trials"]


async def test_questionnaire_needs_a_published_item_bank(
    client: AsyncClient, admin: dict[str, str]
) -> None:
    missing = await client.post(
        "/api/modules", json=module_body(kind="questionnaire"), headers=admin
    )
    assert missing.status_code == 422
    assert locs(missing) == [["body", "item_bank_id"]]

    bank = (await client.post("/api/item-banks", json=item_bank_body(), headers=admin)).json()
    draft_bank = module_body(kind="questionnaire", item_bank_id=bank["id"])
    response = await client.post("/api/modules", json=draft_bank, headers=admin)
    assert response.status_code == 422 and "draft" in response.json()["details"][0]["msg"]
    unknown = module_body(kind="questionnaire", item_bank_id=str(uuid.uuid4()))
    assert locs(await client.post("/api/modules", json=unknown, headers=admin)) == [
        ["body", "item_bank_id"]
    ]

    assert (
        await client.post(f"/api/item-banks/{bank['id']}/publish", headers=admin)
    ).status_code == 200
    created = await client.post("/api/modules", json=draft_bank, headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["item_bank_id"] == bank["id"]

    cognitive = module_body(item_bank_id=bank["id"])
    response = await client.post("/api/modules", json=cognitive, headers=admin)
    assert response.status_code == 422 and locs(response) == [["body", "item_bank_id"]]
    # Clearing the item bank of a questionnaire draft is refused the same way.
    cleared = await client.patch(
        f"/api/modules/{created.json()['id']}", json={"item_bank_id": None}, headers=admin
    )
    assert cleared.status_code == 422 and locs(cleared) == [["body", "item_bank_id"]]


async def test_item_bank_life_cycle(
    client: AsyncClient, admin: dict[str, str], staff: dict[str, str]
) -> None:
    body = item_bank_body()
    created = await client.post("/api/item-banks", json=body, headers=admin)
    assert created.status_code == 201, created.text
    bank = created.json()
    assert bank["status"] == "draft" and bank["items"][1]["reverse_scored"] is True
    assert bank["items"][0]["reverse_scored"] is False
    url = f"/api/item-banks/{bank['id']}"
    again = await client.post("/api/item-banks", json=body, headers=admin)
    assert again.status_code == 409 and again.json()["error_code"] == "item_bank_version_taken"

    items = [*body["items"], {**body["items"][0], "item_id": "q3", "stem": "Ate well?"}]
    patched = await client.patch(url, json={"items": items}, headers=admin)
    assert [i["item_id"] for i in patched.json()["items"]] == ["q1", "q2", "q3"]
    assert (await client.post(f"{url}/publish", headers=admin)).json()["status"] == "published"
    frozen = await client.patch(url, json={"name": "Changed"}, headers=admin)
    assert frozen.status_code == 409 and frozen.json()["error_code"] == "item_bank_published"
    v2 = await client.post("/api/item-banks", json={**body, "version": 2}, headers=admin)
    assert v2.status_code == 201

    assert (await client.get(url, headers=staff)).json()["id"] == bank["id"]
    listed = await client.get(
        "/api/item-banks", params={"key": body["key"], "status": "draft"}, headers=staff
    )
    assert [b["version"] for b in listed.json()] == [2]
    assert (await client.post("/api/item-banks", json=body, headers=staff)).status_code == 403
    assert (await client.post(f"{url}/publish", headers=staff)).status_code == 403


@pytest.mark.parametrize(
    ("items", "loc"),
    [
        ([], ["body", "items"]),
        (
            [
                {"item_id": "q1", "stem": "A", "options": [{"code": 0, "label": "No"}]},
            ],
            ["body", "items", 0, "options"],
        ),
        (
            [
                {
                    "item_id": "q1",
                    "stem": "A",
                    "options": [{"code": 1, "label": "No"}, {"code": 1, "label": "Yes"}],
                }
            ],
            ["body", "items", 0],
        ),
        (
            [
                {"item_id": "q1", "stem": "A", "options": [{"code": 0, "label": "N"}] * 2},
            ],
            ["body", "items", 0],
        ),
        (
            [
                {
                    "item_id": "q1",
                    "stem": "A",
                    "options": [{"code": 0, "label": "N"}, {"code": 1, "label": "Y"}],
                },
                {
                    "item_id": "q1",
                    "stem": "B",
                    "options": [{"code": 0, "label": "N"}, {"code": 1, "label": "Y"}],
                },
            ],
            ["body", "items"],
        ),
    ],
)
async def test_item_bank_items_are_checked(
    client: AsyncClient, admin: dict[str, str], items: list[dict[str, Any]], loc: list[Any]
) -> None:
    response = await client.post("/api/item-banks", json=item_bank_body(items=items), headers=admin)
    assert response.status_code == 422, response.text
    assert loc in locs(response)


async def test_load_builtins_is_idempotent(db: AsyncSession) -> None:
    first = await load_builtins(db)
    second = await load_builtins(db)
    assert list(first) == list(BUILTIN_KEYS)
    assert {k: m.id for k, m in first.items()} == {k: m.id for k, m in second.items()}
    assert await db.scalar(select(func.count()).select_from(Module)) == 5
    assert await db.scalar(select(func.count()).select_from(ItemBank)) == 1
    bank = await db.scalar(select(ItemBank))
    assert bank is not None and bank.key == "mood9" and len(bank.items) == 9
    assert 1 <= sum(item["reverse_scored"] for item in bank.items) <= 2
    assert bank.status == PublicationStatus.published
    assert first["mood9"].item_bank_id == bank.id
    for module in first.values():
        assert module.status == PublicationStatus.published and module.version == 1
        for schema in (module.trial_schema, module.summary_schema):
            assert schema["additionalProperties"] is False
            assert set(schema["required"]) == set(schema["properties"])
        assert module.trial_schema["properties"]["trial_index"] == {
            "type": "integer",
            "minimum": 0,
        }


def _rt_trials(choice: bool = False) -> list[dict[str, Any]]:
    rows = [(250.0, True, False), (80.0, True, True), (None, False, False), (330.0, True, False)]
    trials = []
    for n, (rt, responded, anticipation) in enumerate(rows):
        trial: dict[str, Any] = {
            "trial_index": n,
            "stimulus_onset_ms": 1000.0 * n,
            "rt_ms": rt,
            "responded": responded,
            "anticipation": anticipation,
        }
        if choice:
            response = ("left" if n else "right") if responded else None
            trial |= {"stimulus": "left", "response": response, "correct": response == "left"}
        trials.append(trial)
    return trials


def _rt_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    rts = [t["rt_ms"] for t in trials if t["responded"] and not t["anticipation"]]
    return {
        "n_trials": len(trials),
        "n_valid": sum(t["responded"] and not t["anticipation"] for t in trials),
        "mean_rt_ms": round(statistics.fmean(rts), 1),
        "median_rt_ms": statistics.median(rts),
        "sd_rt_ms": statistics.stdev(rts),
        "n_lapses": sum(not t["responded"] for t in trials),
    }


def _sample_runs() -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    simple = _rt_trials()
    choice = _rt_trials(choice=True)
    cpt = [
        {
            "trial_index": n,
            "stimulus": s,
            "target": t,
            "responded": r,
            "correct": t == r,
            "rt_ms": rt,
        }
        for n, (s, t, r, rt) in enumerate(
            [
                ("X", True, True, 400.0),
                ("X", True, False, None),
                ("A", False, False, None),
                ("B", False, True, 350.0),
                ("X", True, True, 420.0),
            ]
        )
    ]
    digits = [
        ("forward", [1, 2, 3], [1, 2, 3]),
        ("forward", [4, 5, 6, 7], [4, 5, 6, 7]),
        ("forward", [8, 1, 4, 2, 9], [8, 1, 2, 4, 9]),
        ("backward", [3, 9, 4], [4, 3, 9]),
    ]
    span = [
        {
            "trial_index": n,
            "direction": d,
            "span_length": len(seq),
            "sequence": seq,
            "response": resp,
            "correct": (seq if d == "forward" else seq[::-1]) == resp,
        }
        for n, (d, seq, resp) in enumerate(digits)
    ]
    codes = [2, 1, 3, 0, 1, 2, 0, 3, 1]
    mood = [
        {"trial_index": n, "item_id": f"m{n + 1}", "response_code": c, "rt_ms": 1500.0}
        for n, c in enumerate(codes)
    ]
    total = sum(3 - c if n + 1 in (5, 8) else c for n, c in enumerate(codes))
    return {
        "simple_rt": (_rt_summary(simple), simple),
        "choice_rt": (
            {**_rt_summary(choice), "n_correct": 2, "accuracy": 0.5},
            choice,
        ),
        "cpt": (
            {
                "n_trials": 5,
                "hits": 2,
                "misses": 1,
                "false_alarms": 1,
                "correct_rejections": 1,
                "hit_rate": 2 / 3,
                "false_alarm_rate": 0.5,
                "d_prime": 0.43,
                "mean_hit_rt_ms": 410.0,
            },
            cpt,
        ),
        "digit_span": (
            {"longest_span_forward": 4, "longest_span_backward": None, "total_correct": 2},
            span,
        ),
        "mood9": ({"total_score": total, "n_items_answered": 9}, mood),
    }


async def test_builtins_accept_a_plausible_run_and_their_scorers_catch_a_wrong_summary(
    db: AsyncSession,
) -> None:
    """Each built-in, through the submit path's own checks (schemas, trial order) and its
    server-side scorer: the plausible run agrees, a wrong summary is a mismatch (stored and
    flagged after ingest, not refused by it)."""
    builtins = await load_builtins(db)
    for key, (summary, trials) in _sample_runs().items():
        module = builtins[key]
        compiled = compile_module(
            module.id,
            module.key,
            module.version,
            module.trial_schema,
            module.summary_schema,
        )
        task = TaskIn(module_key=key, module_version=1, summary=summary, trials=trials)
        assert check_task(compiled, task, 0) == [], key

        derived = [m["key"] for m in module.metrics if m["derived_from"]]
        first = derived[0]
        value = summary[first] or 0
        # Off by one, within the schema's bounds (a total at its maximum goes down).
        wrong = {**summary, first: value - 1 if value >= 1 else value + 1}
        bad = TaskIn(module_key=key, module_version=1, summary=wrong, trials=trials)
        assert check_task(compiled, bad, 0) == [], key
        off_schema = {**summary, first: "many"}
        odd = TaskIn(module_key=key, module_version=1, summary=off_schema, trials=trials)
        problems = check_task(compiled, odd, 0)
        assert [(p["loc"], p["field"]) for p in problems] == [
            (["body", "tasks", 0, "summary", first], f"summary.{first}")
        ], key
        assert problems[0]["rule"].startswith("schema_"), key

        scorer = scorer_for(key, 1, has_item_bank=module.item_bank_id is not None)
        items = None
        if module.item_bank_id is not None:
            items = (await db.get(ItemBank, module.item_bank_id)).items  # type: ignore[union-attr]
        scored = scorer.score(ScoringInput(trials, module.metrics, items)).summary
        agreed = compare(summary, scored, module.metrics)
        assert agreed.keys() == summary.keys(), key
        assert not [m for m, c in agreed.items() if c["mismatch"]], (key, agreed)
        disagreed = compare(wrong, scored, module.metrics)
        assert [m for m, c in disagreed.items() if c["mismatch"]] == [first], key
