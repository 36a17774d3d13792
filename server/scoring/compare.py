"""The client's summary against the server's: per metric, both values, the difference, and
whether they disagree beyond the metric's tolerance."""

from __future__ import annotations

from typing import Any

# By the metric's unit (the module's `metrics`), unless its derived_from names a tolerance:
# counts must agree exactly; a client may round milliseconds to the nearest one (0.5) and
# proportions and d' to three and two decimals.
TOLERANCE_BY_UNIT: dict[str, float] = {
    "count": 0.0,
    "digits": 0.0,
    "points": 0.0,
    "ms": 0.5,
    "proportion": 0.001,
    "z": 0.01,
}
DEFAULT_TOLERANCE = 1e-6
# Floating-point noise between two correct implementations of the same sum.
_EPSILON = 1e-9


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare(
    client: dict[str, Any], server: dict[str, Any], metrics: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Every metric both summaries have: {client, server, diff (server - client), tolerance,
    mismatch}. A metric null on one side only is a mismatch with no difference."""
    units = {m["key"]: m.get("unit") for m in metrics}
    # A module may name its own tolerance for a derived metric; it wins over the unit's.
    given = {
        m["key"]: float(m["derived_from"]["tolerance"])
        for m in metrics
        if isinstance(m.get("derived_from"), dict) and "tolerance" in m["derived_from"]
    }
    compared: dict[str, dict[str, Any]] = {}
    for key in client.keys() & server.keys():
        mine, theirs = server[key], client[key]
        tolerance = given.get(key, TOLERANCE_BY_UNIT.get(units.get(key) or "", DEFAULT_TOLERANCE))
        if mine is None and theirs is None:
            diff, mismatch = None, False
        elif _number(mine) and _number(theirs):
            diff = float(mine) - float(theirs)
            mismatch = abs(diff) > tolerance + _EPSILON
        else:
            diff, mismatch = None, True
        compared[key] = {
            "client": theirs,
            "server": mine,
            "diff": diff,
            "tolerance": tolerance,
            "mismatch": mismatch,
        }
    return dict(sorted(compared.items()))
