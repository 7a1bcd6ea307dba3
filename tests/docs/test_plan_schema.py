"""docs/plan.schema.json is the exported JSON Schema of plan.json, kept in step with the code."""

from __future__ import annotations

import json
from pathlib import Path

from sp_planner.planfile import SCHEMA_VERSION, plan_file_json_schema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "plan.schema.json"
REGENERATE = (
    ".venv/bin/python -c \"from sp_planner.planfile import plan_file_json_schema; "
    "print(plan_file_json_schema(), end='')\" > docs/plan.schema.json"
)


def test_committed_schema_equals_the_export():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == plan_file_json_schema(), (
        f"docs/plan.schema.json is stale; regenerate it with: {REGENERATE}"
    )


def test_schema_pins_the_version_and_requires_the_question():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert {"model", "hardware", "workload", "num_nodes", "gpus_per_node", "plan"} <= set(schema["required"])
