"""Peak memory, cold load time, tail latency and throughput on the real digits model, the limits
on them, and the JUnit file of a run: one gate run through the real CLI."""

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import CONFIG

GOLDEN = Path(__file__).parent / "golden"
SCHEMAS = Path(__file__).parent / "schemas"     # junit-10.xsd (Jenkins xUnit), SARIF 2.1.0 (OASIS)

POLICY = """version: 1
devices:
  x86-cpu:
    max_load_time_ms: 0.001
    max_memory_mb: 0.01
    max_latency_p99_ms: 1000
    min_throughput_ips: 1
"""
MEMORY_LINE = 5          # the line of max_memory_mb above


@pytest.fixture(scope="module")
def gated(tmp_path_factory, digits_onnx_cached):
    repo = tmp_path_factory.mktemp("memory") / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models/digits.onnx")
    # enough timed runs for a p99 (min_time_s keeps it short on this small model)
    config = CONFIG.replace("repeats: 20", "repeats: 120") + "policy: policy.yml\n"
    (repo / "edgegate.yml").write_text(config)
    (repo / "policy.yml").write_text(POLICY)
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "models/digits.onnx",
                           "--no-cache", "--junit", "out/junit.xml", "--sarif", "out/results.sarif",
                           "--out", "out"], cwd=repo,
                          capture_output=True, text=True, timeout=900)
    report = json.loads((repo / "out/report.json").read_text())
    return repo, proc, report


def _result(report):
    (model,) = report["models"]
    (result,) = model["results"]
    return result


def test_peak_memory_and_load_time_of_the_int8_artifact_and_the_fp32_model(gated):
    _, proc, report = gated
    r = _result(report)
    assert r["artifact"]["precision"] == "int8", proc.stderr
    m = r["metrics"]
    for key in ("peak_memory_mb", "peak_memory_mb_fp32", "load_time_ms", "load_time_ms_fp32"):
        assert m[key] is not None and m[key] > 0, (key, m["not_measured"].get(key))
    # an ONNX Runtime session of a ~100k-parameter CNN: megabytes, not hundreds
    assert 0.1 < m["peak_memory_mb"] < 200 and 0.1 < m["peak_memory_mb_fp32"] < 200
    assert m["memory_growth_pct"] == pytest.approx(
        (m["peak_memory_mb"] / m["peak_memory_mb_fp32"] - 1) * 100)
    mem = r["measurement"]["memory"]
    assert r["measurement"]["where"] == "host"
    assert mem["inferences"] >= 1 and "fresh" in mem["process"]
    if sys.platform == "linux":
        assert mem["method"].startswith("kernel RSS high-water mark")
    for role in ("artifact", "fp32"):
        rec = mem[role]
        assert rec["peak_rss_mb"] >= rec["baseline_rss_mb"] > 0      # the process's own baseline
        assert rec["runtime_import_mb"] > 0                             # onnxruntime itself, not counted


def test_tail_latency_and_throughput(gated):
    _, _, report = gated
    m = _result(report)["metrics"]
    assert m["latency_runs"] >= 100
    assert m["latency_p99_ms"] >= m["latency_p50_ms_after"] > 0
    lo, hi = m["latency_p99_ci95_ms"]
    assert lo <= m["latency_p99_ms"] <= hi
    assert m["throughput_ips"] > 0 and m["throughput_ips_fp32"] > 0
    assert "latency_p99_ms" not in m["not_measured"]


def test_a_memory_limit_below_the_measured_peak_fails_the_gate(gated):
    repo, proc, report = gated
    r = _result(report)
    assert proc.returncode == 1 and report["verdict"] == "failed", proc.stderr
    assert [v["limit"] for v in r["violations"]] == ["max_load_time_ms", "max_memory_mb"]
    v = r["violations"][1]
    assert v["source"] == f"policy.yml:{MEMORY_LINE}" and v["measured"] == r["metrics"]["peak_memory_mb"]
    assert "max_memory_mb" in proc.stdout and f"policy.yml:{MEMORY_LINE}" in proc.stdout
    comment = (repo / "out/comment.md").read_text()
    assert f"`max_memory_mb` is 0.01" in comment and f"`policy.yml:{MEMORY_LINE}`" in comment
    assert "Memory and load" in comment and "inferences/s" in comment
    checks = {c["limit"]: c["passed"] for c in r["checks"]}
    assert checks["max_latency_p99_ms"] and checks["min_throughput_ips"]
    # the failing load-time limit was confirmed by a second cold load; the lower one counts
    confirmation = r["measurement"]["memory"]["load_confirmation"]
    assert confirmation["second_ms"] > 0 and r["metrics"]["load_time_ms"] == pytest.approx(
        min(confirmation["first_ms"], confirmation["second_ms"]), rel=1e-3)


def check_junit_structure(root: ET.Element) -> None:
    """The structure JUnit consumers read (the Ant / Jenkins JUnit schema's elements and
    attributes): testsuites > testsuite > testcase > failure | error | skipped, counts that add up."""
    assert root.tag == "testsuites"
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root:
        assert suite.tag == "testsuite" and suite.get("name")
        for attr in ("tests", "failures", "errors", "skipped"):
            assert suite.get(attr, "").isdigit(), (suite.get("name"), attr)
        float(suite.get("time"))
        cases = list(suite)
        assert all(c.tag == "testcase" for c in cases)
        counted = {"tests": len(cases), "failures": 0, "errors": 0, "skipped": 0}
        for case in cases:
            assert case.get("name") and case.get("classname")
            float(case.get("time"))
            outcomes = list(case)
            assert len(outcomes) <= 1 and all(o.tag in ("failure", "error", "skipped") for o in outcomes)
            for o in outcomes:
                assert o.get("message")
                counted[{"failure": "failures", "error": "errors", "skipped": "skipped"}[o.tag]] += 1
        assert counted == {k: int(suite.get(k)) for k in counted}, suite.get("name")
        for k in totals:
            totals[k] += counted[k]
    assert {k: totals[k] for k in ("tests", "failures", "errors")} == {
        k: int(root.get(k)) for k in ("tests", "failures", "errors")}


def validate_junit(path: Path) -> None:
    """The file against the Jenkins xUnit plugin's junit-10.xsd."""
    xmlschema = pytest.importorskip("xmlschema")
    xmlschema.XMLSchema(SCHEMAS / "junit-10.xsd").validate(str(path))


def validate_sarif(path: Path, report: dict) -> dict:
    """The file against the OASIS SARIF 2.1.0 schema (errata01); one result per violation the
    verdict counts (limits broken, and loosened limits that block)."""
    jsonschema = pytest.importorskip("jsonschema")
    log = json.loads(path.read_text())
    jsonschema.validate(log, json.loads((SCHEMAS / "sarif-schema-2.1.0.json").read_text()))
    violations = sum(len(r["violations"]) for m in report["models"] for r in m["results"]) + sum(
        1 for c in report.get("policy_changes", []) if c["change"] == "loosened" and not c["allowed"])
    assert len(log["runs"][0]["results"]) == violations
    return log


def test_junit_counts_the_failures_of_the_verdict(gated):
    repo, _, report = gated
    root = ET.parse(repo / "out/junit.xml").getroot()
    check_junit_structure(root)
    violations = sum(len(r["violations"]) for m in report["models"] for r in m["results"])
    checks = sum(len(r["checks"]) for m in report["models"] for r in m["results"])
    assert int(root.get("failures")) == violations == 2
    assert int(root.get("tests")) == checks and int(root.get("errors")) == 0
    case = next(c for c in root.iter("testcase") if c.get("name") == "max_memory_mb")
    assert case.get("classname") == "models/digits.onnx@x86-cpu"
    assert f"policy.yml:{MEMORY_LINE}" in case.find("failure").get("message")
    validate_junit(repo / "out/junit.xml")


def test_sarif_has_one_result_per_violation_at_the_policy_line(gated):
    repo, _, report = gated
    log = validate_sarif(repo / "out/results.sarif", report)
    (memory,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "max_memory_mb"]
    policy, model = (loc["physicalLocation"] for loc in memory["locations"])
    assert policy == {"artifactLocation": {"uri": "policy.yml"}, "region": {"startLine": MEMORY_LINE}}
    assert model["artifactLocation"]["uri"] == "models/digits.onnx"
    rules = log["runs"][0]["tool"]["driver"]["rules"]
    assert rules[memory["ruleIndex"]]["id"] == "max_memory_mb"


def test_junit_of_errors_and_rechecks(tmp_path):
    """The golden report has a model that failed to load: one error testcase; `check --junit`
    with a stricter policy counts the new violations as failures."""
    from edgegate.report.junit import junit_xml
    from edgegate.report.model import read_report

    report = read_report(GOLDEN / "report.json")
    root = junit_xml(report).getroot()
    check_junit_structure(root)
    errored = sum(1 for m in report.models if m.error is not None) + \
        sum(1 for m in report.models for r in m.results if r.status == "error")
    assert int(root.get("errors")) == errored >= 1 and int(root.get("failures")) == 0
    strict = tmp_path / "strict.yml"
    strict.write_text("version: 1\ndevices:\n  x86-cpu:\n    min_size_ratio: 100\n    max_size_mb: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "check", str(GOLDEN / "report.json"),
                           "--policy", str(strict), "--junit", str(tmp_path / "j.xml"),
                           "--sarif", str(tmp_path / "s.sarif"),
                           "--out", str(tmp_path / "r.json")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr               # the broken model still errors
    rechecked = json.loads((tmp_path / "r.json").read_text())
    root = ET.parse(tmp_path / "j.xml").getroot()
    check_junit_structure(root)
    violations = sum(len(r["violations"]) for m in rechecked["models"] for r in m["results"])
    assert int(root.get("failures")) == violations >= 2
    validate_junit(tmp_path / "j.xml")
    validate_sarif(tmp_path / "s.sarif", rechecked)


def test_a_runtime_that_cannot_load_here_gives_a_reason_never_numbers():
    """The memory measurement of a TensorRT engine without TensorRT: not measured, with why."""
    import numpy as np

    from edgegate.stages.measurement import measure_memory
    from edgegate.stages.memory import Loadable

    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    metrics, gaps = {}, {}
    record = measure_memory(Loadable("tensorrt", Path("model.engine"), 1, "model.engine"), None,
                            {"input": np.zeros((1, 1, 32, 32), np.float32)}, metrics, gaps)
    assert metrics == {}
    assert "tensorrt" in gaps["peak_memory_mb"] and "tensorrt" in gaps["load_time_ms"]
    assert gaps["peak_memory_mb_fp32"] == "the FP32 model does not run here"
    assert "error" in record["artifact"]


def test_one_run_measures_each_model_file_once(digits_onnx_cached, tmp_path):
    """The FP32 model gated on two devices of one runtime is loaded in one fresh process, not
    two; a copy of the file under another name is the same model; another feed is measured."""
    import numpy as np

    from edgegate.stages.measurement import measure_memory
    from edgegate.stages.memory import Footprints, Loadable

    copy = tmp_path / "same.onnx"
    shutil.copy(digits_onnx_cached / "digits.onnx", copy)
    feed = {"input": np.load(digits_onnx_cached / "data/evaluation.npz")["input"][:1]}
    footprints = Footprints()
    first, second = {}, {}
    measure_memory(Loadable("onnxruntime", digits_onnx_cached / "digits.onnx", 1, "a.onnx"),
                   None, feed, first, {}, footprints)
    record = measure_memory(Loadable("onnxruntime", copy, 1, "b.onnx"), None, feed, second, {},
                            footprints)
    assert (footprints.measured, footprints.reused) == (1, 1)
    assert second == first and first["peak_memory_mb"] > 0
    assert record["artifact"]["reused_in_run"] is True
    footprints.footprint(Loadable("onnxruntime", copy, 1, "b.onnx"), {"input": feed["input"] * 0})
    assert (footprints.measured, footprints.reused) == (2, 1)
