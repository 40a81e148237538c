"""JSON schemas for editors (edgegate.yml, policy files) and for report.json consumers."""

from __future__ import annotations

import json
from pathlib import Path

from edgegate.config.policy_schema import PolicyFile
from edgegate.config.schema import Config
from edgegate.report.model import Report

SCHEMAS = {
    "edgegate.schema.json": (Config, "EdgeGate configuration (edgegate.yml)"),
    "policy.schema.json": (PolicyFile, "EdgeGate policy file / device profiles"),
    "report.schema.json": (Report, "EdgeGate report.json"),
}


def schema_text(model, title: str) -> str:
    schema = model.model_json_schema()
    schema["title"] = title
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, title) in SCHEMAS.items():
        path = out_dir / name
        path.write_text(schema_text(model, title), encoding="utf-8")
        written.append(path)
    return written
