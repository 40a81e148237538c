"""comment.md and summary.md, rendered with Jinja2 from report.json alone.

Templates render in a sandbox; every name or path that came from the pull request goes through
the ``md`` filter (Markdown and HTML escaped, no autolinks, @mentions neutralised, bidi and
invisible characters shown as escapes). The comment is kept under
GitHub's 65,536-character limit by degrading: details collapse away first, then passing rows.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from edgegate.config.policy_schema import LIMITS
from edgegate.trust.logsafe import INVISIBLE, visible
from edgegate.report.model import IDENTICAL_OUTPUTS, Report

MARKER = "<!-- edgegate:comment -->"
COMMENT_LIMIT = 65_536
SUMMARY_LIMIT = 1 << 20          # GitHub's job summary limit per step (bytes)
TEMPLATES = Path(__file__).parent / "templates"

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")
_WWW = re.compile(r"(?i)(www)\.")
_HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029"
                     + "".join(chr(c) for c in sorted(INVISIBLE)) + "]")


def _md_plain(s: str) -> str:
    s = html.escape(s, quote=False)
    s = _MD_SPECIAL.sub(r"\\\1", s)
    # no autolinks: GitHub links "scheme:" and "www." hosts in plain text; a backslash escape
    # renders the same character without the link
    s = _WWW.sub(r"\1\\.", s.replace(":", "\\:"))
    return s.replace("@", "@\u200b")


def md(text: object) -> str:
    """Escape untrusted text for inline Markdown: no markup, no HTML, no links or autolinks, no
    @mentions, one line; bidi controls, zero-width and other control characters are shown as
    visible escapes (``<U+202E>``, ``\\x1b``), so a displayed name is the real name."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    out, at = [], 0
    for hit in _HIDDEN.finditer(s):
        out.append(_md_plain(s[at:hit.start()]))
        out.append(visible(hit.group()))        # "<U+202E>" is no HTML tag ("+"), "\\x1b" no escape
        at = hit.end()
    out.append(_md_plain(s[at:]))
    return "".join(out)


def code(text: object) -> str:
    """Untrusted text as an inline code span. Inside a code span Markdown, HTML, backslash
    escapes and autolinks are all inert (so ``md``'s escapes would show as backslashes); only
    the fence must outlast any run of backticks in the text, and hidden characters are shown."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = _HIDDEN.sub(lambda hit: visible(hit.group()), s)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def chart_label(text: object) -> str:
    """A device id for a Mermaid chart label: only characters that cannot end the label."""
    return re.sub(r"[^A-Za-z0-9._ -]", "_", str(text))[:40]


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def fmt_num(x: float | None, digits: int = 2, suffix: str = "") -> str:
    if x is None:
        return "—"
    return f"{x:.{digits}f}{suffix}"


def fmt_ms(ms: float | None) -> str:
    """A latency or load time: below 1 ms in µs (``320 µs``), else ms with three significant
    digits (``1.87 ms``, ``38.9 ms``), from 10 s on in s. The one time formatter of the comment,
    the summary and the CLI table."""
    if ms is None:
        return "—"
    for scale, unit, floor in ((1e-3, "s", 10_000.0), (1.0, "ms", 1.0), (1e3, "µs", 0.0)):
        v = ms * scale
        if abs(ms) >= floor:
            text = f"{v:.{0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2}f}"
            if unit == "µs" and float(text) >= 1000:        # 999.7 µs rounds up to 1.00 ms
                return fmt_ms(1.0 if ms > 0 else -1.0)
            return f"{text} {unit}"
    return f"{ms:.2f} ms"


def fmt_drop(pp: float | None) -> str:
    """An accuracy drop in percentage points, positive when the compressed model is worse (the
    one sign convention: comment, summary, CLI table, JUnit), ``0.00`` never signed."""
    if pp is None:
        return "—"
    text = f"{pp:.2f}"
    return "0.00" if float(text) == 0 else text


def _g(x: float) -> str:
    return f"{x:.4g}"


# metric -> (scale, unit, digits) of its value and its limit; latencies and sizes have their own
# formatters (fmt_ms, fmt_bytes)
_UNITS = {"speedup": (1, "×", 2), "size_ratio": (1, "×", 1), "accuracy_drop_pp": (1, " pp", 2),
          "top1_agreement": (100, " %", 1), "box_f1": (1, "", 3), "cosine_similarity": (1, "", 4),
          "mask_iou": (1, "", 4), "mask_agreement": (100, " %", 1),
          "sqnr_db": (1, " dB", 1), "peak_memory_mb": (1, " MB", 1),
          "memory_growth_pct": (1, " %", 1), "throughput_ips": (1, "/s", 1)}
_TIMES = ("latency_p50_ms_after", "latency_p99_ms", "load_time_ms")


def fmt_value(metric: str, value: float | None) -> str:
    """A measured metric in its unit, as the comment and the CLI table print it."""
    if value is None:
        return "—"
    if metric in _TIMES:
        return fmt_ms(value)
    if metric == "size_mb_after":
        return fmt_bytes(round(value * 1e6))
    if metric == "accuracy_drop_pp":
        return f"{fmt_drop(value)} pp"
    scale, unit, digits = _UNITS.get(metric, (1, "", 4))
    sign = "+" if metric == "memory_growth_pct" else ""
    return f"{value * scale:{sign}.{digits}f}{unit}"


def fmt_limit(check) -> str:
    """A check's limit in the metric's unit: ``≥ 1.5×``, ``≤ 1 pp``, ``≥ 99 %``, ``≤ 500 µs``."""
    direction = LIMITS[check.limit][0] if check.limit in LIMITS else "min"
    op = "≥" if direction == "min" else "≤"
    t = check.threshold
    if check.metric in _TIMES:
        text = f"{_g(t * 1000)} µs" if t < 1 else f"{_g(t)} ms"
    elif check.metric == "size_mb_after":
        text = f"{_g(t)} MB"
    else:
        scale, unit, _ = _UNITS.get(check.metric, (1, "", 4))
        text = f"{_g(t * scale)}{unit}"
    return f"{op} {text}"


MARKS = {True: " ✅", False: " ❌", None: " ❔"}


def limited(result, metric: str, text: str | None = None, marks: dict = MARKS) -> str:
    """``value (limit) ✅`` for one metric of a device result: the value as measured (or
    ``text``), its limit in the same unit and the check's mark; no limit on the metric: the value
    alone, no mark. A limit on a value that was not measured reads ``not measured (≥ 1.1×) ❔``."""
    value = getattr(result.metrics, metric, None)
    check = next((c for c in result.checks if c.metric == metric), None)
    if text is not None:
        shown = text
    elif value is not None:
        shown = fmt_value(metric, value)
    elif result.measurement.get("where") == "not measured":
        shown = "not measured here"
    else:
        shown = "not measured" if check is not None or metric in result.metrics.not_measured else "—"
    if check is None:
        return shown
    return f"{shown} ({fmt_limit(check)}){marks[check.passed]}"


FIDELITY_LABELS = {"top1_agreement": "top-1 agreement", "box_f1": "box F1",
                   "cosine_similarity": "cosine", "sqnr_db": "SQNR", "mask_iou": "mask IoU"}


def size_cell(r, marks: dict = MARKS) -> str:
    m = r.metrics
    if m.size_bytes_after is None:
        return "—"
    text = limited(r, "size_mb_after", fmt_bytes(m.size_bytes_after), marks)
    return text + (f" · {limited(r, 'size_ratio', None, marks)}" if m.size_ratio else "")


def accuracy_cell(r, marks: dict = MARKS, esc=md) -> str:
    """Labelled accuracy after compression and its drop (positive: worse), against its limit;
    ``esc`` escapes the metric's name (a custom metric is named in the PR's edgegate.yml)."""
    m = r.metrics
    if m.accuracy_after is not None and m.metric in ("top1", "top5"):
        return limited(r, "accuracy_drop_pp",
                       f"{m.accuracy_after:.2f} %, drop {fmt_drop(m.accuracy_drop_pp)} pp", marks)
    if m.accuracy_after is not None:
        before = "—" if m.accuracy_before is None else f"{m.accuracy_before:.4f}"
        text = f"{esc(m.metric)} {before} → {m.accuracy_after:.4f}"
        if any(c.metric == "accuracy_drop_pp" for c in r.checks):      # a limit it cannot meet
            drop = "not measured" if m.accuracy_drop_pp is None else f"{fmt_drop(m.accuracy_drop_pp)} pp"
            text += "; " + limited(r, "accuracy_drop_pp", f"drop {drop}", marks)
        return text
    if m.primary_metric is None and m.top1_agreement is not None:
        return limited(r, "top1_agreement",
                       f"agreement {fmt_value('top1_agreement', m.top1_agreement)}", marks)
    if m.primary_metric is None and m.cosine_similarity is not None:
        return limited(r, "cosine_similarity",
                       f"cosine {fmt_value('cosine_similarity', m.cosine_similarity)}", marks)
    return limited(r, "accuracy_drop_pp", None, marks)


def fidelity_cell(r, marks: dict = MARKS, esc=md) -> str:
    """The task's own label-free metric against the FP32 model, against its limit."""
    m = r.metrics
    p = m.primary_metric
    if p is None:
        return "—"
    label = FIDELITY_LABELS.get(p) or esc(p.replace("_", " "))
    value = getattr(m, p, None)
    if value is not None:
        return limited(r, p, f"{label} {fmt_value(p, value)}", marks)
    if m.not_measured.get(p) == IDENTICAL_OUTPUTS:
        return limited(r, p, f"{label}: identical", marks)
    if r.measurement.get("where") == "not measured":
        return limited(r, p, "not measured here", marks)
    return limited(r, p, f"{label} not measured", marks)


def chart_limits(results) -> list[float | None]:
    """Each charted device's min_speedup (None: no such limit), for the chart's limit line."""
    return [next((c.threshold for c in r.checks if c.metric == "speedup"), None) for r in results]


def chart_top(results) -> float:
    """The chart's y-axis top: above the highest bar, the 1.0x line and every limit."""
    values = [r.metrics.speedup for r in results] + [x for x in chart_limits(results) if x] + [1.0]
    return round(max(values) * 1.2, 1)


def row_cells(r, marks: dict = MARKS, esc=md) -> dict[str, str]:
    """The numbers of one device's table row, each ``value (limit) mark``: the comment, the
    summary and the CLI table print these (the CLI with its own marks and ``esc=str``)."""
    return {"size": size_cell(r, marks), "latency": limited(r, "latency_p50_ms_after", None, marks),
            "speedup": limited(r, "speedup", None, marks), "accuracy": accuracy_cell(r, marks, esc),
            "fidelity": fidelity_cell(r, marks, esc)}


def measured_off_device(result) -> bool:
    """Timed on the host that ran EdgeGate while the device is another machine: the target says
    so (``measurement.device_note``: LiteRT, Core ML, TensorRT measured here for a Raspberry Pi,
    a phone, a Jetson)."""
    m = result.measurement
    return m.get("where") == "host" and bool(m.get("device_note"))


def host_note(report: Report, markdown: bool = True) -> str:
    """The footnote of a row marked † (measured_off_device)."""
    arch = str(report.machine.get("arch") or "")
    if markdown:
        arch = md(arch)
    runner = "`runner:`" if markdown else "'runner:'"
    return (f"measured on the {arch + ' ' if arch else ''}host that ran EdgeGate, not on the "
            f"device; a device profile's {runner} label measures on the device itself")


def source_name(source: str, builtin: bool = False) -> str:
    """Where a limit was set, for people: ``built-in x86-cpu profile`` for a profile that ships
    with EdgeGate (its file is inside the installed package), ``file:line`` relative to the
    repository otherwise."""
    if builtin:
        return f"built-in {Path(source.rsplit(':', 1)[0]).stem} profile"
    return source


def check_source(check) -> str:
    return source_name(check.source, check.builtin)


def base_status(result) -> tuple[str, str]:
    """(mark, text) of the vs-base column: each limit the head fails, said against the base
    commit's value of the same metric ("already failing on base (1.02×)", or a new failure);
    then any regression; "no regression" only when neither."""
    b = result.baseline
    parts, mark = [], "✅"
    for v in result.violations:
        base_value = b.metrics.get(v.metric)
        direction = LIMITS[v.limit][0] if v.limit in LIMITS else "min"
        if base_value is None:
            parts.append(f"`{v.limit}`: the base's {v.metric} is not recorded (base {b.status})")
        elif b.status == "passed":
            parts.append(f"`{v.limit}` newly failing: base passed ({fmt_value(v.metric, base_value)})")
        elif (base_value < v.threshold) if direction == "min" else (base_value > v.threshold):
            parts.append(f"`{v.limit}` already failing on base ({fmt_value(v.metric, base_value)})")
        else:
            parts.append(f"`{v.limit}` newly failing: base had {fmt_value(v.metric, base_value)}")
        mark = "❌"
    if b.regressions:
        parts.append("regressed: " + ", ".join(b.regressions))
        mark = "❌"
    return mark, "; ".join(parts) or "no regression"


def environment(template_dir: Path | None = None) -> SandboxedEnvironment:
    dirs = [str(template_dir)] if template_dir else []
    env = SandboxedEnvironment(loader=FileSystemLoader(dirs + [str(TEMPLATES)]),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               keep_trailing_newline=True, autoescape=False)
    env.filters.update(md=md, code=code, bytes=fmt_bytes, num=fmt_num, chart_label=chart_label,
                       ms=fmt_ms, drop=fmt_drop)
    env.globals.update(MARKER=MARKER, icon=icon, check_icon=check_icon, limit_sources=limit_sources,
                       IDENTICAL_OUTPUTS=IDENTICAL_OUTPUTS, limited=limited, fmt_value=fmt_value,
                       fmt_limit=fmt_limit, measured_off_device=measured_off_device,
                       host_note=host_note, check_source=check_source, base_status=base_status,
                       row_cells=row_cells, chart_limits=chart_limits, chart_top=chart_top)
    return env


def limit_sources(report: Report) -> list[str]:
    """The policy files that set a limit this report checked, in the order they were stacked,
    named for people (``built-in x86-cpu profile``, a repository's file as its path)."""
    used = dict.fromkeys((c.source.rsplit(":", 1)[0], c.builtin)
                         for m in report.models for r in m.results for c in r.checks)
    stacked = {f: i for i, f in reversed(list(enumerate(report.policy_files)))}
    order = sorted(used, key=lambda fb: (stacked.get(fb[0], len(stacked)), not fb[1]))
    return [source_name(f, builtin) for f, builtin in order]


def icon(status: str) -> str:
    return {"passed": "✅", "failed": "❌", "error": "⚠️", "skipped": "⏭️"}.get(status, "❔")


def check_icon(result, *metrics: str) -> str:
    """✅/❌ for the limits on these metrics; '' when no limit covers them; ❔ when not measured."""
    marks = [c for c in result.checks if c.metric in metrics]
    if not marks:
        return ""
    if any(c.passed is False for c in marks):
        return " ❌"
    if any(c.passed is None for c in marks):
        return " ❔"
    return " ✅"


def render(report: Report, fmt: str = "comment", template_dir: Path | None = None,
           detail: str = "full") -> str:
    env = environment(template_dir)
    template = env.get_template(f"{fmt}.md.j2")
    return template.render(report=report, detail=detail)


def render_comment(report: Report, template_dir: Path | None = None,
                   limit: int = COMMENT_LIMIT, summary_url: str | None = None) -> str:
    """The PR comment, degraded until it fits: full -> no details -> failing rows only."""
    text = ""
    for detail in ("full", "compact", "failing"):
        text = render(report, "comment", template_dir, detail)
        if len(text) <= limit:
            return text
    note = "\n\n… truncated: the full report is in the job summary and report.json.\n"
    return text[: limit - len(note)] + note


def write_rendered(report: Report, out_dir: Path, template_dir: Path | None = None) -> tuple[Path, Path]:
    comment = out_dir / "comment.md"
    summary = out_dir / "summary.md"
    comment.write_text(render_comment(report, template_dir), encoding="utf-8")
    text = render(report, "summary", template_dir)
    if len(text.encode("utf-8")) > SUMMARY_LIMIT:
        text = render(report, "summary", template_dir, "compact")
    summary.write_text(text, encoding="utf-8")
    return comment, summary
