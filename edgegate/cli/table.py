"""The verdict table printed at the end of ``edgegate run`` (plain text, from report.json).

Its cells are the PR comment's (report/render.py ``row_cells``: ``value (limit)``, latencies below
1 ms in µs, an accuracy drop positive when worse), marked FAIL / ? instead of ✅/❌/❔.
"""

from __future__ import annotations

from edgegate.report.model import Report
from edgegate.report.render import (base_status, check_source, fmt_value, host_note,
                                    measured_off_device, row_cells)

MARKS = {True: "", False: " FAIL", None: " ?"}


def verdict_table(report: Report) -> str:
    rows = [("model", "device", "status", "size · compression", "p50 latency", "speedup vs FP32",
             "accuracy", "fidelity vs FP32")]
    off_device = False
    for model in report.models:
        if model.error is not None:
            rows.append((model.name, "—", "error", "", "", "", "", ""))
            continue
        for r in model.results:
            marker = " †" if measured_off_device(r) else ""
            off_device = off_device or bool(marker)
            if r.status in ("error", "skipped"):
                rows.append((model.name, r.device + marker, r.status, "", "", "", "", ""))
                continue
            c = row_cells(r, MARKS, esc=str)
            rows.append((model.name, r.device + marker, r.status, c["size"], c["latency"],
                         c["speedup"], c["accuracy"], c["fidelity"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
    if off_device:
        out += "\n† " + host_note(report, markdown=False)
    problems = []
    for model in report.models:
        if model.error is not None:
            message = model.error.message          # the path once, even when the error names it
            if not message.startswith(f"{model.path}:"):
                message = f"{model.path}: {message}"
            problems.append(f"  {message}")
            if model.error.fix:
                problems.append(f"    Fix: {model.error.fix}")
        for r in model.results:
            for v in r.violations:
                problems.append(f"  {model.name} on {r.device}: {v.limit} {v.threshold:g} but measured "
                                f"{fmt_value(v.metric, v.measured) if v.measured is not None else 'nothing'}"
                                f" (set {'by the' if v.builtin else 'at'} {check_source(v)})")
            if r.baseline is not None and r.violations:
                problems.append(f"  {model.name} on {r.device} vs base {r.baseline.commit[:7]}: "
                                + base_status(r)[1].replace("`", ""))
            if r.status in ("error", "skipped") and r.reason:
                problems.append(f"  {model.name} on {r.device}: {r.status}: {r.reason}")
                if r.error is not None and r.error.fix:
                    problems.append(f"    Fix: {r.error.fix}")
    if problems:
        out += "\n\n" + "\n".join(problems)
    return out


def run_errors(report) -> str:
    """The run-level errors (edgegate.yml, git, devices): the same two lines per problem as every
    other error, ``file:line: field: what, got X`` then ``Fix:``, for stderr."""
    lines = []
    for e in report.errors:
        lines.append(e.message)
        if e.fix:
            lines.append(f"Fix: {e.fix}")
    return "\n".join(lines)
