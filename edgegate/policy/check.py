"""Pure functions: no I/O, no clock. The same report and policy always give the same verdict."""

from __future__ import annotations

from edgegate.config.load import ResolvedDevice
from edgegate.config.policy_schema import FIDELITY_LIMITS, LIMITS
from edgegate.report.model import IDENTICAL_OUTPUTS, Check, DeviceResult, ModelReport, Report

# Exact measurements are compared as they are; latency ratios use the confidence interval so a
# gate never flips on timing noise: a speedup fails only when even the interval's upper bound is
# below the limit, and a latency budget only when the interval's lower bound is above it.


def _measured(result: DeviceResult, metric: str, device: ResolvedDevice | None = None
              ) -> tuple[float | None, float | None, str | None]:
    """(value, value used to decide, note)"""
    m = result.metrics
    decision = getattr(device.profile, "accuracy_decision", None) if device is not None else None
    if metric == "accuracy_drop_pp" and decision in ("ci95_upper", "ci95_lower") \
            and m.accuracy_drop_pp is not None and m.accuracy_drop_ci95_pp:
        bound = m.accuracy_drop_ci95_pp[1 if decision == "ci95_upper" else 0]
        return m.accuracy_drop_pp, bound, (f"decided on the paired 95% interval's "
                                           f"{'upper' if decision == 'ci95_upper' else 'lower'} bound "
                                           f"{bound:.2f} pp (accuracy_decision: {decision})")
    if metric == "speedup":
        if m.speedup is None:
            return None, None, None
        hi = m.speedup_ci95[1] if m.speedup_ci95 else m.speedup
        return m.speedup, hi, "decided on the 95% interval's upper bound (noise-proof)"
    if metric in ("latency_p50_ms_after", "latency_p99_ms"):
        v = getattr(m, metric)
        if v is None:
            return None, None, None
        ci = m.latency_p50_ci95_ms_after if metric == "latency_p50_ms_after" else m.latency_p99_ci95_ms
        lo = ci[0] if ci else v
        return v, lo, "decided on the 95% interval's lower bound (noise-proof)"
    if metric == "throughput_ips":
        v = m.throughput_ips
        if v is None:
            return None, None, None
        hi = m.throughput_ci95_ips[1] if m.throughput_ci95_ips else v
        return v, hi, "decided on the 95% interval's upper bound (noise-proof)"
    value = getattr(m, metric, None)
    return value, value, None


def _applies(name: str, limit, result: DeviceResult) -> bool:
    """A built-in profile's fidelity defaults gate only the metric of the model's task (top-1
    agreement for a classifier, box F1 for a detector, ...); limits a repository sets apply to
    every model of the device."""
    if name not in FIDELITY_LIMITS or not getattr(limit, "builtin", False):
        return True
    primary = result.metrics.primary_metric
    return primary is None or LIMITS[name][1] == primary


def _unmeasured_fails(metric: str, result: DeviceResult) -> bool:
    """The task's own fidelity metric missing on an artifact that ran here is a failure, never a
    pass: a gate that cannot tell whether the outputs held must say no."""
    return (metric == result.metrics.primary_metric
            and result.measurement.get("where") not in (None, "not measured"))


def check_result(result: DeviceResult, device: ResolvedDevice | None) -> DeviceResult:
    if result.status in ("error", "skipped") or device is None:
        return result
    checks = []
    for name, limit in sorted(device.limits.items()):
        if not _applies(name, limit, result):
            continue
        direction, metric, _unit = LIMITS[name]
        builtin = getattr(limit, "builtin", False)          # named "built-in ... profile" in reports
        value, decide, note = _measured(result, metric, device)
        warning = None
        if name == "max_accuracy_drop_pp" and result.metrics.metric in ("top1", "top5"):
            from edgegate.stages.stats import evaluation_too_small

            warning = evaluation_too_small(result.metrics.eval_samples, limit.value)
        if decide is None:
            why = result.metrics.not_measured.get(metric) or "not measured"
            if why == IDENTICAL_OUTPUTS and direction == "min":     # infinite SQNR: perfect
                checks.append(Check(limit=name, metric=metric, threshold=limit.value,
                                    measured=None, passed=True, source=limit.source,
                                    builtin=builtin, note=why))
                continue
            fails = _unmeasured_fails(metric, result)
            if fails:
                why = (f"{why}; the {result.metrics.task} model's fidelity ({metric}) could not be "
                       "computed, so the gate fails rather than pass unchecked")
            checks.append(Check(limit=name, metric=metric, threshold=limit.value, measured=None,
                                passed=False if fails else None, source=limit.source,
                                builtin=builtin, note=why, warning=warning))
            continue
        ok = decide <= limit.value if direction == "max" else decide >= limit.value
        checks.append(Check(limit=name, metric=metric, threshold=limit.value, measured=value,
                            passed=ok, source=limit.source, builtin=builtin,
                            note=note if note and value is not None and
                            ((value <= limit.value) if direction == "max" else (value >= limit.value)) != ok
                            else None,
                            decided_on=decide if decide != value else None, warning=warning))
    violations = [c for c in checks if c.passed is False]
    return result.model_copy(update={"checks": checks, "violations": violations,
                                     "status": "failed" if violations else "passed"})


def model_status(model: ModelReport) -> str:
    if model.error is not None or any(r.status == "error" for r in model.results):
        return "error"
    if any(r.status == "failed" for r in model.results):
        return "failed"
    return "passed"


def blocking_policy_changes(policy_changes) -> list:
    """Limits a pull request loosened without the base commit's configuration allowing it."""
    return [c for c in policy_changes if c.change == "loosened" and not c.allowed]


def verdict_of(models: list[ModelReport], run_errors: list, policy_changes=()) -> str:
    statuses = {model_status(m) for m in models}
    if run_errors or "error" in statuses:
        return "error"
    if "failed" in statuses or blocking_policy_changes(policy_changes):
        return "failed"
    return "passed"


def exit_code_for(models: list[ModelReport], run_errors: list, policy_changes=()) -> int:
    """0 all passed, 1 a gate failed, 2 bad configuration or input, 3 internal error."""
    kinds = [e.kind for e in run_errors]
    for m in models:
        if m.error is not None:
            kinds.append(m.error.kind)
        kinds += [r.error.kind for r in m.results if r.error is not None]
    # a model that exceeds its time or memory budget (kind "isolation") is bad input, not a bug
    if any(k == "internal" for k in kinds):
        return 3
    if kinds:
        return 2
    if any(r.status == "failed" for m in models for r in m.results) or \
            blocking_policy_changes(policy_changes):
        return 1
    return 0


def check_report(report: Report, devices: dict[str, ResolvedDevice], policy_files: list[str]) -> Report:
    models = []
    for model in report.models:
        results = [check_result(r.model_copy(update={"status": "passed"}) if r.status in ("passed", "failed") else r,
                                devices.get(r.device)) for r in model.results]
        updated = model.model_copy(update={"results": results})
        models.append(updated.model_copy(update={"status": model_status(updated)}))
    return report.model_copy(update={
        "models": models, "verdict": verdict_of(models, report.errors, report.policy_changes),
        "exit_code": exit_code_for(models, report.errors, report.policy_changes),
        "policy_files": policy_files})
