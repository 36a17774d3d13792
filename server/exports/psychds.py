"""The Psych-DS layout of an export: its CSVs again under keyword file names, and
dataset_description.json with every variable measured (https://psych-ds.github.io/)."""

# A worker process runs one export on its own loop: blocking file calls hold up nothing else.

from __future__ import annotations

import json
from pathlib import Path

from server.exports.columns import Column


def layout(
    tmp: Path, files: dict[str, Path], layouts: dict[str, list[Column]], counts: dict[str, int]
) -> None:
    """The CSVs again as data/<keyword>-<value>_data.csv, and dataset_description.json with
    every variable measured (Psych-DS)."""
    names = {}
    for name in sorted(files):
        if not name.endswith(".csv"):
            continue
        stem = name.removesuffix(".csv")
        if stem == "sessions":
            keywords = "level-session"
        else:
            key, version = stem.removeprefix("trials_").rsplit("_v", 1)
            keywords = f"level-trial_module-{key.replace('_', '')}_version-{version}"
        names[f"data/{keywords}_data.csv"] = name
    for target, source in names.items():
        files[target] = files[source]
        layouts[target] = layouts[source]
        counts[target] = counts[source]
    variables = sorted({c.name for target in names for c in layouts[target]})
    description = {
        "@context": "https://schema.org/",
        "@type": "Dataset",
        "name": "Metricis export",
        "description": "Trial-level and session-level data; see codebook.csv and manifest.json.",
        "variableMeasured": variables,
    }
    path = tmp / "dataset_description.json"
    path.write_bytes(json.dumps(description, indent=1).encode() + b"\n")
    files["dataset_description.json"] = path
