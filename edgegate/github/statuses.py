"""Commit statuses, one per device (context ``edgegate/<device>``), each summarising every gated
model on that device in at most 140 characters."""

from __future__ import annotations

from dataclasses import dataclass

from edgegate.github.client import GitHubRepo
from edgegate.trust.logsafe import show_hidden
from edgegate.report.model import Report
from edgegate.report.render import fmt_drop

DESCRIPTION_LIMIT = 140
STATE = {"passed": "success", "failed": "failure", "error": "error", "skipped": "success"}
RANK = {"success": 0, "pending": 1, "failure": 2, "error": 3}


@dataclass(frozen=True)
class StatusLine:
    context: str
    state: str            # success | failure | error | pending
    description: str


def clip(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    text = show_hidden(" ".join(text.split()))      # a model name with U+202E cannot spoof the status
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _result_text(model: str, result) -> str:
    m = result.metrics
    if result.status == "failed":
        limits = ", ".join(sorted({v.limit for v in result.violations})) or "a limit"
        return f"{model} failed {limits}"
    if result.status == "error":
        kind = result.error.kind if result.error else "error"
        return f"{model}: {kind} error"
    if result.status == "skipped":
        return f"{model} skipped"
    parts = []
    if m.size_ratio is not None:
        parts.append(f"{m.size_ratio:.2f}x smaller")
    if m.speedup is not None:
        parts.append(f"{m.speedup:.2f}x faster")
    if m.accuracy_drop_pp is not None:
        parts.append(f"accuracy drop {fmt_drop(m.accuracy_drop_pp)} pp")      # positive: worse
    return f"{model} passed" + (f": {', '.join(parts)}" if parts else "")


def statuses_for(report: Report, devices: list[str] | None = None) -> list[StatusLine]:
    """One status per device seen in the report (plus ``devices`` with nothing to gate)."""
    per_device: dict[str, list[tuple[str, str]]] = {}
    for model in report.models:
        if model.error is not None and not model.results:
            for device in devices or []:
                per_device.setdefault(device, []).append(("error", f"{model.name}: {model.error.kind} error"))
        for result in model.results:
            per_device.setdefault(result.device, []).append(
                (STATE[result.status], _result_text(model.name, result)))
    refused: dict[str, list[str]] = {}
    for c in report.policy_changes:
        if c.change == "loosened" and not c.allowed:
            refused.setdefault(c.device, []).append(c.limit)
    lines = []
    for device in sorted(set(per_device) | set(devices or []) | set(refused)):
        rows = per_device.get(device, [])
        if report.errors:
            state = "error"
            text = f"configuration error: {report.errors[0].message}"
        elif device in refused:
            # the run fails on it: a required check must not say success
            state = "failure"
            text = ("the pull request loosens " + ", ".join(refused[device]) +
                    " (not allowed by the base commit's edgegate.yml)")
        elif not rows:
            state, text = "success", "no changed model to gate"
        else:
            state = max((s for s, _ in rows), key=RANK.__getitem__)
            worst = [t for s, t in rows if s == state]
            if len(rows) == 1:
                text = rows[0][1]
            else:
                text = f"{len(worst)} of {len(rows)} models {'passed' if state == 'success' else state}: " + \
                       "; ".join(worst)
        lines.append(StatusLine(f"edgegate/{device}", state, clip(text)))
    return lines


def post_statuses(gh: GitHubRepo, sha: str, lines: list[StatusLine],
                  target_url: str | None = None) -> int:
    """Set each status on ``sha`` (a status write is idempotent: the latest per context wins)."""
    from github.GithubObject import NotSet

    commit = gh.repo.get_commit(sha)
    for line in lines:
        def create(line: StatusLine = line) -> object:
            return commit.create_status(line.state, target_url or NotSet, clip(line.description),
                                        line.context)

        gh.call(f"set status {line.context}", create)
    return len(lines)
