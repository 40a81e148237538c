"""check(report, policy) is pure: violations name the limit, the measured value and file:line."""

from pathlib import Path

from edgegate.config.load import Limit, ResolvedDevice
from edgegate.config.policy_schema import DeviceProfile
from edgegate.policy.check import check_result, exit_code_for
from edgegate.report.model import DeviceResult, ErrorInfo, Metrics, ModelReport


def device(**limits):
    return ResolvedDevice("x86-cpu", "onnxruntime", DeviceProfile(target="onnxruntime"),
                          {k: Limit(k, v, "policy.yml", 3 + i) for i, (k, v) in enumerate(limits.items())})


def result(**metrics):
    return DeviceResult(device="x86-cpu", target="onnxruntime", status="passed",
                        metrics=Metrics(**metrics))


def test_violation_names_limit_value_and_source():
    r = check_result(result(accuracy_drop_pp=2.5, size_ratio=4.0),
                     device(max_accuracy_drop_pp=1.0, min_size_ratio=3.0))
    assert r.status == "failed"
    assert [(v.limit, v.measured, v.threshold, v.source) for v in r.violations] == \
        [("max_accuracy_drop_pp", 2.5, 1.0, "policy.yml:3")]
    assert {c.limit: c.passed for c in r.checks} == {"max_accuracy_drop_pp": False, "min_size_ratio": True}


def test_speedup_gate_does_not_flip_on_noise():
    # point estimate below the limit, but the interval reaches it: not a failure
    r = check_result(result(speedup=1.45, speedup_ci95=[1.38, 1.52]), device(min_speedup=1.5))
    assert r.status == "passed" and r.checks[0].note
    r = check_result(result(speedup=1.2, speedup_ci95=[1.15, 1.25]), device(min_speedup=1.5))
    assert r.status == "failed"


def test_unmeasured_metric_is_not_a_pass_or_fail():
    r = check_result(result(not_measured={"latency_p50_ms_after": "Core ML prediction needs macOS"}),
                     device(max_latency_p50_ms=10))
    assert r.status == "passed"
    assert r.checks[0].passed is None and "macOS" in r.checks[0].note


def test_pure_same_input_same_output():
    args = (result(accuracy_drop_pp=0.5, speedup=2.0, speedup_ci95=[1.9, 2.1]),
            device(max_accuracy_drop_pp=1.0, min_speedup=1.5))
    assert check_result(*args) == check_result(*args)


def test_exit_codes():
    passed = ModelReport(path="a", name="a", results=[result()])
    failed = ModelReport(path="b", name="b", results=[result().model_copy(update={"status": "failed"})])
    bad_input = ModelReport(path="c", name="c", status="error",
                            error=ErrorInfo(kind="input", message="corrupt"))
    crash = ModelReport(path="d", name="d", status="error",
                        error=ErrorInfo(kind="internal", message="bug"))
    assert exit_code_for([passed], []) == 0
    assert exit_code_for([passed, failed], []) == 1
    assert exit_code_for([failed, bad_input], []) == 2
    assert exit_code_for([bad_input, crash], []) == 3
    assert exit_code_for([], [ErrorInfo(kind="config", message="x")]) == 2
    too_slow = ModelReport(path="e", name="e", status="error",
                           error=ErrorInfo(kind="isolation", message="timed out after 20 s"))
    assert exit_code_for([too_slow], []) == 2


def builtin_device(**limits):
    return ResolvedDevice("x86-cpu", "onnxruntime", DeviceProfile(target="onnxruntime"),
                          {k: Limit(k, v, "policies/x86-cpu.yml", 10 + i, builtin=True)
                           for i, (k, v) in enumerate(limits.items())})


FIDELITY_DEFAULTS = dict(min_top1_agreement=0.99, min_box_f1=0.95, min_cosine_similarity=0.99,
                         min_sqnr_db=20.0)
HOST = {"where": "host", "runtime": "onnxruntime"}


def measured(**metrics):
    return result(**metrics).model_copy(update={"measurement": HOST})


def test_builtin_fidelity_defaults_gate_only_the_tasks_own_metric():
    # a classifier whose predictions drifted fails on agreement; its low SQNR is not its gate
    r = check_result(measured(task="classification", primary_metric="top1_agreement",
                              top1_agreement=0.86, cosine_similarity=0.95, sqnr_db=9.0),
                     builtin_device(**FIDELITY_DEFAULTS))
    assert r.status == "failed"
    assert [c.limit for c in r.checks] == ["min_top1_agreement"]
    # a detector is gated on box F1, not on top-1 agreement it does not have
    r = check_result(measured(task="detection", primary_metric="box_f1", box_f1=0.64,
                              cosine_similarity=0.999, sqnr_db=35.0),
                     builtin_device(**FIDELITY_DEFAULTS))
    assert [(v.limit, v.measured) for v in r.violations] == [("min_box_f1", 0.64)]
    # the same limits set by the repository apply to every model of the device
    r = check_result(measured(task="detection", primary_metric="box_f1", box_f1=0.97,
                              cosine_similarity=0.98), device(min_cosine_similarity=0.99))
    assert [v.limit for v in r.violations] == ["min_cosine_similarity"]


def test_a_task_fidelity_that_cannot_be_computed_fails_never_passes():
    why = "the FP32 model detects no box above conf 0.25 on the 40 evaluation samples"
    r = check_result(measured(task="detection", primary_metric="box_f1",
                              not_measured={"box_f1": why}), builtin_device(**FIDELITY_DEFAULTS))
    assert r.status == "failed"
    assert why in r.violations[0].note and "fails rather than pass" in r.violations[0].note
    # where the artifact cannot run at all (Core ML off macOS) it is not measured, not failed
    off = result(task="detection", primary_metric="box_f1",
                 not_measured={"box_f1": "needs macOS"}).model_copy(
        update={"measurement": {"where": "not measured", "reason": "needs macOS"}})
    assert check_result(off, builtin_device(**FIDELITY_DEFAULTS)).status == "passed"


def test_identical_outputs_pass_an_sqnr_limit():
    from edgegate.report.model import IDENTICAL_OUTPUTS

    r = check_result(measured(task="regression", primary_metric="sqnr_db",
                              not_measured={"sqnr_db": IDENTICAL_OUTPUTS}),
                     builtin_device(**FIDELITY_DEFAULTS))
    assert r.status == "passed" and r.checks[0].passed is True


def test_memory_load_tail_and_throughput_limits():
    r = check_result(measured(peak_memory_mb=80.0, memory_growth_pct=12.0, load_time_ms=40.0,
                              latency_p99_ms=9.0, latency_p99_ci95_ms=[8.0, 11.0],
                              throughput_ips=150.0, throughput_ci95_ips=[120.0, 190.0]),
                     device(max_memory_mb=64, max_memory_growth_pct=10, max_load_time_ms=50,
                            max_latency_p99_ms=10, min_throughput_ips=180))
    by = {c.limit: c for c in r.checks}
    assert [v.limit for v in r.violations] == ["max_memory_growth_pct", "max_memory_mb"]
    assert by["max_memory_mb"].measured == 80.0 and by["max_memory_mb"].source.startswith("policy.yml:")
    assert by["max_load_time_ms"].passed is True
    # tail latency and throughput are timings: decided on the interval (noise-proof)
    assert by["max_latency_p99_ms"].passed is True and by["max_latency_p99_ms"].decided_on == 8.0
    assert by["min_throughput_ips"].passed is True and by["min_throughput_ips"].decided_on == 190.0
    slow = check_result(measured(latency_p99_ms=14.0, latency_p99_ci95_ms=[12.0, 16.0],
                                 throughput_ips=90.0, throughput_ci95_ips=[85.0, 95.0]),
                        device(max_latency_p99_ms=10, min_throughput_ips=100))
    assert [v.limit for v in slow.violations] == ["max_latency_p99_ms", "min_throughput_ips"]


def test_memory_not_measurable_is_not_a_pass_or_fail():
    why = "Model prediction is only supported on macOS"
    off = result(not_measured={"peak_memory_mb": why, "load_time_ms": why,
                               "latency_p99_ms": why}).model_copy(
        update={"measurement": {"where": "not measured", "reason": why}})
    r = check_result(off, device(max_memory_mb=64, max_load_time_ms=50, max_latency_p99_ms=10))
    assert r.status == "passed" and r.metrics.peak_memory_mb is None
    assert all(c.passed is None and c.note == why for c in r.checks)


def test_new_limits_have_no_builtin_default():
    from edgegate.config.load import builtin_profiles, resolve_devices

    new = {"max_memory_mb", "max_memory_growth_pct", "max_load_time_ms", "max_latency_p99_ms",
           "min_throughput_ips"}
    for dev in resolve_devices(builtin_profiles()).values():
        assert not new & set(dev.limits), dev.id
