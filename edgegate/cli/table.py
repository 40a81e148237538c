"""The verdict table printed at the end of ``edgegate run`` (plain text, from report.json)."""

from __future__ import annotations

from edgegate.report.model import Report
from edgegate.report.render import fmt_bytes, fmt_num


def fidelity_text(m) -> str:
    """The task's own fidelity number against the FP32 model (label-free), e.g. 'box F1 0.97'."""
    p = m.primary_metric
    value = getattr(m, p, None) if p else None
    if p is None or value is None:
        return "n/a" if p is None or m.not_measured.get(p) is None else "not measured"
    if p == "top1_agreement":
        return f"agree {value * 100:.1f}%"
    if p == "box_f1":
        return f"box F1 {value:.3f}"
    if p == "cosine_similarity":
        return f"cosine {value:.4f}"
    return f"SQNR {value:.1f} dB"


def verdict_table(report: Report) -> str:
    rows = [("model", "device", "status", "size", "ratio", "p50 ms", "speedup", "acc drop pp",
             "fidelity vs FP32")]
    for model in report.models:
        if model.error is not None:
            rows.append((model.name, "—", "error", "", "", "", "", "", ""))
            continue
        for r in model.results:
            m = r.metrics
            rows.append((model.name, r.device, r.status,
                         fmt_bytes(m.size_bytes_after), fmt_num(m.size_ratio, 2, "x"),
                         f"{fmt_num(m.latency_p50_ms_before)}→{fmt_num(m.latency_p50_ms_after)}"
                         if m.latency_p50_ms_after is not None else "n/a",
                         fmt_num(m.speedup, 2, "x"), fmt_num(m.accuracy_drop_pp, 2), fidelity_text(m)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    out = "\n".join(lines)
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
                problems.append(f"  {model.name} on {r.device}: {v.limit} {v.threshold} "
                                f"but measured {fmt_num(v.measured, 3)} (set at {v.source})")
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
