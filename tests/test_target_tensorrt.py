"""TensorRT up to the point that needs a GPU: the QDQ ONNX with TensorRT's settings, the exact
engine-build command shipped beside it, engine metrics reported as not measurable without CUDA."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import commit_all, git

CONFIG = """version: 1
models:
  - path: models/digits.onnx
    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [jetson-orin-nano, jetson-nano]
"""


@pytest.fixture(scope="module")
def gated(tmp_path_factory, digits_onnx_cached):
    from edgegate.config.load import load_config
    from edgegate.progress import Progress
    from edgegate.gate.run import RunOptions, run_gate

    repo = tmp_path_factory.mktemp("trt") / "repo"
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    (repo / "edgegate.yml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "config")
    (repo / "models").mkdir()
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models/digits.onnx")
    commit_all(repo, "model")
    out = repo / "out"
    run_gate(load_config(repo / "edgegate.yml"), RunOptions(models=[], base="HEAD~1"), out, Progress())
    report = json.loads((out / "report.json").read_text())
    results = {r["device"]: r for r in report["models"][0]["results"]}
    return out, results


def test_int8_qdq_onnx_is_symmetric_and_per_channel(gated):
    out, results = gated
    r = results["jetson-orin-nano"]
    assert r["status"] in ("passed", "failed"), r
    assert r["artifact"]["format"] == "onnx" and r["artifact"]["precision"] == "int8"
    model = onnx.load(str(out / r["artifact"]["path"]))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:                                  # TensorRT rejects non-zero zero points
        if len(node.input) > 2:
            assert not np.any(init[node.input[2]]), node.name
            assert init[node.input[2]].dtype == np.int8
    per_channel = [init[n.input[1]] for n in qdq if n.input[1] in init and init[n.input[1]].size > 1]
    assert per_channel, "weights are quantized per channel"
    q = r["quantization"]
    assert q["int8_mac_share"] == 1.0 and q["zero_points"].startswith("all 0")
    assert r["metrics"]["size_ratio"] > 3.0            # int8 weights, float biases


@pytest.mark.skipif(sys.platform == "win32", reason="sh script")
def test_engine_build_command_ships_beside_the_artifact(gated):
    out, results = gated
    r = results["jetson-orin-nano"]
    artifact = out / r["artifact"]["path"]
    script = artifact.with_name("digits-jetson-orin-nano-build-engine.sh")
    text = script.read_text()
    assert f"--onnx={artifact.name}" in text and "--int8" in text and "--saveEngine=" in text
    assert "--minShapes=input:1x1x32x32" in text      # the dynamic batch axis pinned to 1
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0   # valid shell
    assert r["quantization"]["engine_build_command"].startswith("trtexec ")
    fp16 = results["jetson-nano"]
    assert fp16["artifact"]["precision"] == "fp16"
    assert "--fp16" in fp16["quantization"]["engine_build_command"]
    assert "--int8" not in fp16["quantization"]["engine_build_command"]


def test_engine_metrics_are_not_measurable_without_cuda(gated):
    from edgegate.targets.tensorrt import cuda_ready

    ready, why = cuda_ready()
    if ready:
        pytest.skip("a CUDA device with TensorRT is present: the engine is measured instead")
    r = gated[1]["jetson-orin-nano"]
    m = r["metrics"]
    assert m["latency_p50_ms_after"] is None and m["accuracy_after"] is None
    assert "not built here" in m["not_measured"]["latency_p50_ms_after"]
    assert why.split(" (")[0] in m["not_measured"]["speedup"]
    # peak memory, load time, p99 and throughput: not measured with the reason, never numbers
    for key in ("peak_memory_mb", "peak_memory_mb_fp32", "load_time_ms", "latency_p99_ms",
                "throughput_ips"):
        assert m[key] is None and "not built here" in m["not_measured"][key], key
    assert m["size_bytes_after"] > 0                  # the QDQ model is still sized
    assert "tensorrt" not in sys.modules              # nothing imported TensorRT


def test_engine_build_on_a_gpu(tmp_path, digits_onnx_cached):
    from edgegate.targets.tensorrt import build_engine, cuda_ready

    ready, why = cuda_ready()
    if not ready:
        pytest.skip(f"needs a GPU: {why}")
    from edgegate.stages.analyze import analyze

    path = digits_onnx_cached / "digits.onnx"
    engine = build_engine(path, "fp16", analyze(onnx.load(str(path))).inputs, "digits.onnx",
                          out=tmp_path / "digits.engine")
    assert engine.stat().st_size > 0
