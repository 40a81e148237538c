"""SARIF 2.1.0 from a report, for code scanning (``edgegate run --sarif FILE``).

One result per violation the verdict counts: each failed limit of a model × device (rule id: the
limit, e.g. ``max_memory_mb``), and each limit a pull request loosened without the base allowing
it (rule ``policy-loosened``). A result's first location is the policy file:line that set the limit
where that file is in the repository (a built-in profile's limit is not: its file:line stays in
the message), the next the model file; the message is the JUnit failure's.
Errors (a model that could not be gated) are not violations: they are in the JUnit file and the
verdict, not here.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from edgegate import __version__
from edgegate.config.policy_schema import LIMITS, Limits
from edgegate.policy.check import blocking_policy_changes
from edgegate.report.junit import violation_message
from edgegate.report.model import Report

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LOOSENED = "policy-loosened"


def _location(file: str, line: int | None = None) -> dict:
    path = Path(file)
    uri = path.as_uri() if path.is_absolute() else PurePosixPath(*path.parts).as_posix()
    physical: dict = {"artifactLocation": {"uri": uri}}
    if line:
        physical["region"] = {"startLine": int(line)}
    return {"physicalLocation": physical}


def _split(source: str) -> tuple[str, int | None]:
    file, _, line = source.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (source, None)


def _rule(rule_id: str) -> dict:
    if rule_id == LOOSENED:
        text = "a limit loosened by the pull request without the base commit allowing it"
    else:
        direction, metric, unit = LIMITS[rule_id]
        field = Limits.model_fields[rule_id]
        text = (f"{metric} must be {'at most' if direction == 'max' else 'at least'} the limit"
                + (f" ({unit})" if unit else "") + (f": {field.description}" if field.description else ""))
    return {"id": rule_id, "name": rule_id, "shortDescription": {"text": text},
            "helpUri": "https://github.com/edgegate/edgegate/blob/main/docs/policies.md",
            "defaultConfiguration": {"level": "error"}}


def sarif_log(report: Report, root: Path | None = None) -> dict:
    """``root``: the repository the paths are relative to (default: the current directory)."""
    root = Path.cwd() if root is None else Path(root)
    results: list[dict] = []
    for change in blocking_policy_changes(report.policy_changes):
        results.append({
            "ruleId": LOOSENED, "level": "error",
            "message": {"text": f"{change.limit} for {change.device} loosened from {change.old} to "
                                f"{change.new} without the base commit allowing it — {change.source}"},
            "locations": [_location(*_split(change.source))]})     # the PR's policy file
    for model in report.models:
        for r in model.results:
            for check in r.violations:
                file, line = _split(check.source)
                in_repo = line and not Path(file).is_absolute() and (root / file).is_file()
                locations = [_location(file, line)] if in_repo else []
                locations.append(_location(model.path))
                results.append({"ruleId": check.limit, "level": "error",
                                "message": {"text": violation_message(model, r, check)},
                                "locations": locations,
                                "properties": {"model": model.path, "device": r.device,
                                               "metric": check.metric, "measured": check.measured,
                                               "threshold": check.threshold}})
    ids = sorted({res["ruleId"] for res in results})
    index = {rule_id: i for i, rule_id in enumerate(ids)}
    for res in results:
        res["ruleIndex"] = index[res["ruleId"]]
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "EdgeGate", "version": __version__,
                            "informationUri": "https://github.com/edgegate/edgegate",
                            "rules": [_rule(i) for i in ids]}},
        "results": results}]}


def write_sarif(report: Report, path: Path, root: Path | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sarif_log(report, root), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
