"""OpenVINO target and candidate runtimes, end to end on the trained digits CNN: one run gates the
built-in x86-openvino device (OpenVINO and ONNX Runtime both compiled and measured, the faster
that meets the policy ships) and an OpenVINO-only device with a layer kept in float."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgegate._deps import available  # noqa: E402

# not importorskip: importing openvino directly would send its usage telemetry (the target
# imports it with telemetry declined)
if not (available("openvino") and available("nncf")):
    pytest.skip("the openvino extra (openvino, nncf) is not installed", allow_module_level=True)

from conftest import commit_all, git  # noqa: E402

CONFIG = """version: 1
models:
  - path: models/digits.onnx
    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [x86-openvino, ov-box]
policy: policy.yml
benchmark: {repeats: 20, min_time_s: 0.2, max_time_s: 3}
"""

POLICY = """version: 1
devices:
  ov-box:                        # OpenVINO only, one layer kept in float through the ignored scope
    target: openvino
    quantization: {exclude_nodes: [/0/Conv, not_a_node], search_time_s: 15}
    max_accuracy_drop_pp: 1.5
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_onnx_cached):
    from edgegate.config.load import load_config
    from edgegate.progress import Progress
    from edgegate.gate.run import RunOptions, run_gate

    repo = tmp_path_factory.mktemp("openvino") / "repo"
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    (repo / "edgegate.yml").write_text(CONFIG)
    (repo / "policy.yml").write_text(POLICY)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "config and data")
    (repo / "models").mkdir()
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models/digits.onnx")
    commit_all(repo, "add the model")
    out = repo / "out"
    run_gate(load_config(repo / "edgegate.yml"), RunOptions(models=[], base="HEAD~1"), out, Progress())
    return out, json.loads((out / "report.json").read_text())


def _result(run, device):
    (model,) = run[1]["models"]
    return next(r for r in model["results"] if r["device"] == device)


@pytest.mark.slow
def test_both_runtimes_measured_and_the_faster_passing_one_ships(run):
    out, _ = run
    r = _result(run, "x86-openvino")
    assert r["status"] in ("passed", "failed"), r
    (alt,) = r["alternatives"]
    assert {r["target"], alt["target"]} == {"openvino", "onnxruntime"}
    assert r["metrics"]["latency_p50_ms_after"] > 0 and alt["latency_p50_ms_after"] > 0
    # each candidate's memory was measured with its own runtime, in a fresh process
    assert r["metrics"]["peak_memory_mb"] > 0 and alt["peak_memory_mb"] > 0, r["metrics"]["not_measured"]
    assert r["measurement"]["runtime"] == r["target"] and alt["measurement"]["runtime"] == alt["target"]
    # the shipped artifact is the chosen runtime's; the other is kept aside, not released
    assert (out / r["artifact"]["path"]).exists() and r["artifact"]["path"].startswith("artifacts/")
    assert alt["artifact"].startswith("alternatives/") and (out / alt["artifact"]).exists()
    assert [p.name for p in (out / "artifacts").iterdir()
            if p.name.startswith("digits-x86-openvino")] == [r["artifact"]["path"].split("/")[-1]]
    h2h = alt["head_to_head"]
    if alt["status"] == "passed":
        assert r["status"] == "passed"
        # the loser is slower (interleaved ratio > 1), or indistinguishable and the profile's own
        # target (openvino) ships
        assert h2h["ci95"][0] > 1.0 or (h2h["ci95"][0] <= 1.0 <= h2h["ci95"][1] and r["target"] == "openvino")
        assert h2h["ratio"] > 0
    if r["status"] == "failed":
        assert alt["status"] == "failed"          # a passing candidate would have shipped
    assert r["target"] in r["selection"] and alt["target"] in r["selection"]


@pytest.mark.slow
def test_the_comment_shows_both_and_why(run):
    from edgegate.report.model import read_report
    from edgegate.report.render import render

    out, _ = run
    text = render(read_report(out / "report.json"), "comment")
    r = _result(run, "x86-openvino")
    other = r["alternatives"][0]["target"]
    assert f"| ↳ x86-openvino | {other} (" in text and "not shipped" in text
    assert "Runtime chosen by measurement: **" + r["target"] in text
    assert "Not shipped: " + other in text


@pytest.mark.slow
def test_openvino_ir_with_a_layer_kept_in_float(run):
    out, _ = run
    r = _result(run, "ov-box")
    assert r["status"] in ("passed", "failed"), r
    assert r["target"] == "openvino" and r["artifact"]["format"] == "openvino-ir"
    folder = out / r["artifact"]["path"]
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml"]
    assert r["artifact"]["size_bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    m = r["metrics"]
    assert m["accuracy_before"] > 85 and m["accuracy_after"] > 85
    assert m["top1_agreement"] > 0.95 and m["latency_p50_ms_after"] > 0
    q = r["quantization"]
    kept = {k["node"]: k["reason"] for k in q["kept_in_float"]}
    assert "exclude_nodes" in kept["/0/Conv"] and "/0/Conv" not in q["quantized_nodes"]
    assert any("/0/Conv" in name for name in q["ignored_scope"])
    assert any("not_a_node" in n for n in r["notes"])
    if r["artifact"]["precision"] == "int8":
        assert 0 < q["int8_mac_share"] < 1 and q["compute_nodes_quantized"] >= 1
        assert set(q["quantized_nodes"]) | set(kept) == {f"/{i}/{op}" for i, op in
                                                          ((0, "Conv"), (3, "Conv"), (7, "Conv"),
                                                           (11, "Conv"), (16, "Gemm"), (18, "Gemm"))}
    # accuracy control ran on the policy's budget and the report's metric and data
    ac = q["accuracy_control"]
    assert ac["used"] and ac["max_drop_pp"] == 1.5 and ac["source"].startswith("policy.yml:")
    assert ac["metric"] == "top1" and ac["samples"] == m["eval_samples"]
    # FP32 and INT8 compared like with like: the precision hint is stated, f32
    assert r["measurement"]["inference_precision_hint"] in ("f32", "float32")
    assert all(t["inference_precision_hint"] in ("f32", "float32") for t in q["timings"][:2])


def test_targets_lists_openvino_with_its_availability():
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "targets", "--json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:       # the console entry point is the same function
        proc = subprocess.run([sys.executable, "-c", "from edgegate.cli.main import main; main()",
                               "targets", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout)
    ov = next(t for t in data["targets"] if t["id"] == "openvino")
    assert ov["can_compile"] and ov["can_measure"]
    assert any(d["id"] == "x86-openvino" and d["target"] == "openvino" for d in data["devices"])
