"""The snapshot schema (rcupending_tools/schema/snapshot.schema.json) and its validation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_NAME = "rcupending-snapshot"
SCHEMA_VERSION = 2

Snapshot = dict[str, Any]
# What surfaces show: snapshots, log lines (str), or None (nothing new yet: poll keys).
Feed = Iterator[Snapshot | str | None]


@cache
def schema() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("schema/snapshot.schema.json").read_text()
    return json.loads(text)


def validation_errors(snapshot: Snapshot) -> list[str]:
    """Every way `snapshot` breaks the schema (empty when valid)."""
    import jsonschema  # heavy: imported on first use, not at start-up

    validator = jsonschema.Draft202012Validator(schema())
    return [
        f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(snapshot)
    ]


def is_snapshot(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("schema") == SCHEMA_NAME
