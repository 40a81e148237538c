"""Annotations for a report: on each failing model's file, on the policy line whose limit failed
(Check.source is "file:line"), and on the configuration line of a run-level error."""

from __future__ import annotations

from pathlib import Path

from edgegate.github.actions_env import Annotation
from edgegate.report.model import Report

MAX_ANNOTATIONS = 50        # GitHub shows at most 10 errors per step; keep the log readable too


def _split_source(source: str) -> tuple[str, int | None]:
    file, sep, line = source.rpartition(":")
    if sep and line.isdigit():
        return file, int(line)
    return source, None


def _in_workspace(workspace: Path, file: str | None) -> str | None:
    if not file:
        return None
    p = Path(file)
    try:
        rel = (p if p.is_absolute() else workspace / p).resolve().relative_to(workspace.resolve())
    except ValueError:
        return None
    return rel.as_posix() if (workspace / rel).is_file() else None


def _value(x: float | None) -> str:
    return "not measured" if x is None else f"{x:g}"


def annotations_for(report: Report, workspace: Path) -> list[Annotation]:
    out: list[Annotation] = []
    for err in report.errors:
        out.append(Annotation("error", f"{err.message}" + (f" Fix: {err.fix}" if err.fix else ""),
                              _in_workspace(workspace, err.file), err.line,
                              title=f"EdgeGate: {err.kind} error"))
    for model in report.models:
        model_file = _in_workspace(workspace, model.path)
        if model.error is not None:
            out.append(Annotation("error", model.error.message + (f" Fix: {model.error.fix}" if model.error.fix else ""),
                                  model_file, None, title=f"EdgeGate: {model.name} {model.error.kind} error"))
        for result in model.results:
            if result.status == "error" and result.error is not None:
                out.append(Annotation("error", result.error.message, model_file, None,
                                      title=f"EdgeGate: {model.name} on {result.device}: error"))
            if result.status != "failed":
                continue
            for check in result.violations:
                text = (f"{model.name} on {result.device}: {check.metric} {_value(check.measured)} "
                        f"breaks {check.limit} {check.threshold:g} (set at {check.source})")
                out.append(Annotation("error", text, model_file, None,
                                      title=f"EdgeGate: {model.name} failed on {result.device}"))
                file, line = _split_source(check.source)
                policy_file = _in_workspace(workspace, file)
                if policy_file:
                    out.append(Annotation("error", text, policy_file, line,
                                          title=f"EdgeGate: {check.limit} failed"))
    return out[:MAX_ANNOTATIONS]
