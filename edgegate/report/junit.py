"""JUnit XML from a report, for CI test dashboards (``edgegate run --junit FILE``).

One ``<testsuite>`` per model, one ``<testcase>`` per model × device × checked limit
(``classname`` MODEL@DEVICE, ``name`` the limit): a violation is a ``<failure>`` with the same
message the comment gives (the limit, the measured value, the policy file:line); a limit that
could not be measured is ``<skipped>`` with the reason; a device or model that errored is one
``<error>`` testcase, a skipped device one ``<skipped>``. Limits a pull request loosened without
the base allowing it are failures of a ``policy`` suite, and run-level errors errors of an
``edgegate`` suite, so the file counts exactly the failures and errors the verdict counts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from edgegate.policy.check import blocking_policy_changes
from edgegate.report.model import Check, DeviceResult, ModelReport, Report
from edgegate.report.render import check_source, fmt_limit, fmt_value


def violation_message(model: ModelReport, result: DeviceResult, check: Check) -> str:
    """The comment's words: the limit in its unit, the value as the comment prints it (an accuracy
    drop positive when worse, µs below 1 ms), where the limit was set."""
    measured = "not measured" if check.measured is None else fmt_value(check.metric, check.measured)
    text = (f"{model.path} on {result.device}: {check.limit} is {check.threshold:g} "
            f"({fmt_limit(check)}), measured {measured} ({check.metric})")
    if check.note:
        text += f"; {check.note}"
    return text + f" — set {'by the' if check.builtin else 'at'} {check_source(check)}"


class _Suite:
    def __init__(self, parent: ET.Element, name: str, timestamp: str):
        self.el = ET.SubElement(parent, "testsuite", name=name, timestamp=timestamp)
        self.counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        self.time = 0.0

    def case(self, classname: str, name: str, time_s: float = 0.0) -> ET.Element:
        self.counts["tests"] += 1
        self.time += time_s
        return ET.SubElement(self.el, "testcase", classname=classname, name=name,
                             time=f"{time_s:.3f}")

    def outcome(self, case: ET.Element, kind: str, message: str, type_: str | None = None,
                text: str | None = None) -> None:
        self.counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]] += 1
        el = ET.SubElement(case, kind, message=message[:1000])
        if type_:
            el.set("type", type_)
        if text:
            el.text = text

    def close(self) -> dict:
        for k, v in self.counts.items():
            self.el.set(k, str(v))
        self.el.set("time", f"{self.time:.3f}")
        return self.counts


def _result_cases(suite: _Suite, model: ModelReport, r: DeviceResult) -> None:
    classname = f"{model.path}@{r.device}"
    if r.status == "error":
        err = r.error
        case = suite.case(classname, "gate", r.duration_s or 0.0)
        suite.outcome(case, "error", f"{model.path} on {r.device}: {r.reason or 'error'}",
                      err.kind if err else "error", (err.fix if err and err.fix else None))
        return
    if r.status == "skipped":
        suite.outcome(suite.case(classname, "gate"), "skipped", r.reason or "skipped")
        return
    if not r.checks:
        suite.case(classname, "gate (no limits set)", r.duration_s or 0.0)
        return
    for check in r.checks:
        case = suite.case(classname, check.limit)
        if check.passed is False:
            suite.outcome(case, "failure", violation_message(model, r, check), check.limit,
                          f"measured {check.measured}, limit {check.threshold}, decided on "
                          f"{check.decided_on if check.decided_on is not None else check.measured}")
        elif check.passed is None:
            suite.outcome(case, "skipped", f"{check.metric} not measured: {check.note or 'not measured'}")


def junit_xml(report: Report) -> ET.ElementTree:
    root = ET.Element("testsuites", name="edgegate")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    elapsed = 0.0
    suites: list[_Suite] = []
    if report.errors:
        suite = _Suite(root, "edgegate", report.created_at)
        for err in report.errors:
            where = f" ({err.file}{':' + str(err.line) if err.line else ''})" if err.file else ""
            suite.outcome(suite.case("edgegate", f"{err.kind} error"), "error",
                          err.message + where, err.kind, err.fix)
        suites.append(suite)
    blocking = blocking_policy_changes(report.policy_changes)
    if blocking:
        suite = _Suite(root, "policy", report.created_at)
        for c in blocking:
            suite.outcome(suite.case(f"policy@{c.device}", c.limit), "failure",
                          f"{c.limit} for {c.device} loosened from {c.old} to {c.new} without the "
                          f"base commit allowing it — {c.source}", "policy-loosened")
        suites.append(suite)
    for model in report.models:
        suite = _Suite(root, model.path, report.created_at)
        if model.error is not None:
            case = suite.case(model.path, "load")
            suite.outcome(case, "error", f"{model.path}: {model.error.message}", model.error.kind,
                          model.error.fix)
        for r in model.results:
            _result_cases(suite, model, r)
        suites.append(suite)
    for suite in suites:
        for k, v in suite.close().items():
            totals[k] += v
        elapsed += suite.time
    for k, v in totals.items():        # junit-10.xsd: no "skipped" on <testsuites>, only per suite
        if k != "skipped":
            root.set(k, str(v))
    root.set("time", f"{elapsed:.3f}")
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: Report, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    junit_xml(report).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)
    return path
