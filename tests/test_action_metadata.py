"""action.yml and the workflows as GitHub reads them: valid YAML, the metadata rules GitHub and
the Marketplace enforce, and every input the entrypoint reads declared (and nothing else)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted([*ROOT.glob(".github/workflows/*.yml"), *ROOT.glob("examples/workflows/*.yml")])


def load(path: Path):
    # yaml.safe_load is stricter than nothing and as strict as GitHub's parser on plain scalars
    # (an unquoted ': ' inside a value is "mapping values are not allowed here" in both).
    return yaml.safe_load(path.read_text())


def test_action_metadata_parses_and_meets_githubs_rules():
    meta = load(ROOT / "action.yml")
    assert isinstance(meta, dict)
    assert {"name", "description", "runs"} <= set(meta), "action.yml needs name, description, runs"
    assert len(meta["description"]) < 125, "the Marketplace refuses descriptions of 125+ characters"
    assert meta["runs"]["using"] == "docker"
    assert meta["runs"]["image"].startswith("docker://")
    for kind in ("inputs", "outputs"):
        for name, spec in meta[kind].items():
            assert re.fullmatch(r"[a-z][a-z0-9-]*", name), f"{kind}.{name}: use lowercase ids"
            assert isinstance(spec, dict) and isinstance(spec.get("description"), str) and spec["description"], \
                f"{kind}.{name}: a description string is required"
            if kind == "inputs":
                assert isinstance(spec.get("default", ""), str), f"inputs.{name}: defaults are strings"


def test_every_input_the_entrypoint_reads_is_declared():
    meta = load(ROOT / "action.yml")
    source = (ROOT / "edgegate" / "action.py").read_text()
    read = set(re.findall(r"input_(?:value|choice|list)\(env, \"([a-z-]+)\"", source))
    read |= set(re.findall(r"flag\(\"([a-z-]+)\"", source))
    assert read, "found no input reads in edgegate/action.py: the pattern above is stale"
    assert read == set(meta["inputs"]), (
        f"read but not declared: {sorted(read - set(meta['inputs']))}; "
        f"declared but never read: {sorted(set(meta['inputs']) - read)}")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: str(p.relative_to(ROOT)))
def test_workflow_parses(path: Path):
    wf = load(path)
    assert isinstance(wf, dict) and "jobs" in wf, f"{path}: not a workflow"
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    assert "on" in wf or True in wf, f"{path}: no trigger"
    for job, spec in wf["jobs"].items():
        assert "steps" in spec or "uses" in spec, f"{path}: job {job} has no steps"
