"""TFLite / LiteRT end to end on the trained digits CNN: ONNX -> onnx2tf -> INT8 / FP16 TFLite,
measured with LiteRT+XNNPACK, accuracy against the original ONNX model on held-out digits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnx2tf", reason="the tflite extra (onnx2tf) is not installed")
pytest.importorskip("ai_edge_litert", reason="the tflite extra (ai-edge-litert) is not installed")

from conftest import commit_all, git  # noqa: E402

CONFIG = """version: 1
models:
  - path: models/digits.onnx
    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [raspberry-pi-4, my-board]
    quantization: {exclude_nodes: [some_layer]}
policy: policy.yml
benchmark: {repeats: 10, min_time_s: 0.1, max_time_s: 3}
"""

POLICY = """version: 1
devices:
  my-board:                      # a custom hardware profile: FP16 TFLite
    target: tflite
    description: My board, LiteRT FP16
    precision: fp16
    max_accuracy_drop_pp: 0.5
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory, digits_onnx_cached):
    from edgegate.config.load import load_config
    from edgegate.progress import Progress
    from edgegate.gate.run import RunOptions, run_gate

    repo = tmp_path_factory.mktemp("tflite") / "repo"
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    (repo / "edgegate.yml").write_text(CONFIG)
    (repo / "policy.yml").write_text(POLICY)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "config and data")
    (repo / "models").mkdir()
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models/digits.onnx")
    commit_all(repo, "add the model")
    out = repo / "out"
    run_gate(load_config(repo / "edgegate.yml"), RunOptions(models=[], base="HEAD~1"), out,
             Progress())
    return out, json.loads((out / "report.json").read_text())


def _result(report, device):
    (model,) = report[1]["models"]
    return next(r for r in model["results"] if r["device"] == device)


def test_int8_tflite_is_measured_against_the_original(report):
    r = _result(report, "raspberry-pi-4")
    assert r["status"] in ("passed", "failed"), r
    assert r["target"] == "tflite" and r["artifact"]["format"] == "tflite"
    assert r["artifact"]["precision"] == "int8"
    assert (report[0] / r["artifact"]["path"]).is_file()
    m = r["metrics"]
    assert m["accuracy_before"] > 85                    # the trained ONNX model
    assert m["accuracy_after"] > 85                     # the INT8 TFLite model on the same digits
    assert abs(m["accuracy_drop_pp"]) < 3.0
    assert m["top1_agreement"] > 0.95                   # a wrong NCHW/NHWC handling fails this
    assert m["size_ratio"] > 3.0                        # int8 weights
    assert m["latency_p50_ms_after"] > 0 and m["speedup"] > 0
    # the INT8 .tflite and the float .tflite, each loaded by LiteRT in a fresh process
    assert m["peak_memory_mb"] > 0 and m["peak_memory_mb_fp32"] > 0, m["not_measured"]
    assert m["load_time_ms"] > 0 and r["measurement"]["memory"]["artifact"]["runtime_import_mb"] > 0


def test_int8_share_and_where_it_was_measured(report):
    r = _result(report, "raspberry-pi-4")
    q = r["quantization"]
    assert q["io_dtype"] == "int8" and q["calibration_samples"] > 0
    assert q["compute_nodes_total"] >= 6                # 4 convs + 2 dense
    assert q["int8_mac_share"] == 1.0 and q["int8_op_share"] == 1.0
    # the excluded layer cannot be kept in float by onnx2tf: the report says so
    assert any(k["node"] == "some_layer" and "NOT honoured" in k["reason"] for k in q["kept_in_float"])
    meas = r["measurement"]
    assert meas["where"] == "host" and meas["runtime"] == "litert"
    assert "XNNPACK" in meas["delegate"] and meas["threads"] >= 1
    assert "not on a Raspberry Pi 4" in meas["device_note"]


def test_a_device_runner_feeds_the_channels_last_artifact_from_the_report(report):
    """`edgegate measure` (a self-hosted Raspberry Pi job) loads the artifact in a fresh process:
    the layout it needs comes from report.json, not from the compile that made it."""
    import subprocess
    import sys

    out, rep = report
    r = _result(report, "raspberry-pi-4")
    assert r["artifact"]["input_binding"] == {"input": {"transpose": [0, 2, 3, 1]}}
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "measure", str(out),
                           "--only", "models/digits.onnx@raspberry-pi-4", "--out", str(out.parent / "measured"),
                           "--runner-label", "pi-1"], cwd=out.parent, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    measured = json.loads((out.parent / "measured/report.json").read_text())
    (m,) = measured["models"][0]["results"]
    assert m["measurement"]["where"] == "device" and m["measurement"]["runner_label"] == "pi-1"
    assert m["metrics"]["top1_agreement"] > 0.95          # fed NHWC as the artifact wants
    assert m["metrics"]["accuracy_after"] == pytest.approx(r["metrics"]["accuracy_after"], abs=0.5)


def test_custom_fp16_device_from_the_policy(report):
    r = _result(report, "my-board")
    assert r["status"] in ("passed", "failed"), r
    assert r["artifact"]["precision"] == "fp16"
    m = r["metrics"]
    assert m["top1_agreement"] > 0.99 and abs(m["accuracy_drop_pp"]) < 1.0
    assert 1.5 < m["size_ratio"] < 2.5                  # fp16 weights: about half
    assert r["quantization"]["int8_op_share"] == 0.0
    assert any(c["limit"] == "max_accuracy_drop_pp" and c["source"].startswith("policy.yml")
               for c in r["checks"])


def test_no_download_was_attempted(report, monkeypatch):
    """onnx2tf's sample-data download is pre-empted: the trap file sits where it looks."""
    from edgegate.targets.onnx_to_tf import TRAP_FILE

    assert TRAP_FILE.startswith("calibration_image_sample_data_20x128x128x3")
