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

from edgegate.logsafe import INVISIBLE, visible
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


def environment(template_dir: Path | None = None) -> SandboxedEnvironment:
    dirs = [str(template_dir)] if template_dir else []
    env = SandboxedEnvironment(loader=FileSystemLoader(dirs + [str(TEMPLATES)]),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               keep_trailing_newline=True, autoescape=False)
    env.filters.update(md=md, code=code, bytes=fmt_bytes, num=fmt_num, chart_label=chart_label)
    env.globals.update(MARKER=MARKER, icon=icon, check_icon=check_icon, limit_sources=limit_sources,
                       IDENTICAL_OUTPUTS=IDENTICAL_OUTPUTS)
    return env


def limit_sources(report: Report) -> list[str]:
    """The policy files that set a limit this report checked (in the order they were stacked)."""
    used = {c.source.rsplit(":", 1)[0] for m in report.models for r in m.results for c in r.checks}
    return [f for f in report.policy_files if f in used]


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
