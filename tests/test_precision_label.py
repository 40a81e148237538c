"""The precision label says what the artifact holds: never fp32 for a graph with QDQ pairs, and an
artifact labelled fp32 computes what the FP32 model computes (a bug guard)."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import perturbed_copy

from edgegate.data.sources import Dataset
from edgegate.errors import InternalError
from edgegate.stages.optimize import optimize
from edgegate.stages.quantize import classify_nodes, quantize
from edgegate.targets.onnxruntime import _precision, check_fp32_artifact, integer_ops


@pytest.fixture
def optimized(digits_onnx, tmp_path):
    path, _ = optimize(digits_onnx / "digits.onnx", tmp_path / "opt.onnx", "digits.onnx")
    cal = np.load(digits_onnx / "data" / "calibration.npz")["input"][:32]
    return path, Dataset({"input": cal}, None, {})


def with_qdq_on_flatten(src, dst):
    """A QuantizeLinear/DequantizeLinear pair on the Flatten output, every Conv/Gemm in float:
    what ONNX Runtime wrote for the LSTM detector whose weights it could not see."""
    model = onnx.load(str(src))
    graph = model.graph
    flat = next(n for n in graph.node if n.op_type == "Flatten")
    out = flat.output[0]
    graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), "qs"),
                              numpy_helper.from_array(np.array(0, np.uint8), "qz")])
    for node in graph.node:
        node.input[:] = [f"{out}_dq" if i == out else i for i in node.input]
    at = list(graph.node).index(flat) + 1
    for k, node in enumerate([helper.make_node("QuantizeLinear", [out, "qs", "qz"], [f"{out}_q"]),
                              helper.make_node("DequantizeLinear", [f"{out}_q", "qs", "qz"],
                                               [f"{out}_dq"])]):
        graph.node.insert(at + k, node)
    onnx.save(model, str(dst))
    return dst


def test_qdq_without_a_quantized_compute_layer_is_not_called_fp32(optimized, tmp_path):
    # the real case: QDQ pairs on non-compute ops, every Conv/Gemm in float; the int8 MAC share
    # was 0 and the artifact was labelled fp32 while disagreeing with the original
    path, calibration = optimized
    q = with_qdq_on_flatten(path, tmp_path / "q.onnx")
    assert classify_nodes(onnx.load(str(q)))[0] == [] and "QuantizeLinear" in integer_ops(q)
    assert _precision("int8", {"int8": 0.0}, q) == "mixed"
    assert _precision("fp32", {"int8": None}, q) == "mixed"
    full = quantize(path, tmp_path / "full.onnx", calibration, activation_type="uint8")
    assert _precision("int8", {"int8": 0.99}, full.path) == "int8"
    copy = shutil.copyfile(path, tmp_path / "copy.onnx")
    assert _precision("fp32", {"int8": None}, copy) == "fp32"
    with pytest.raises(InternalError, match="digits.onnx.*QuantizeLinear"):
        check_fp32_artifact(q, path, calibration, "digits.onnx")


def test_an_fp32_artifact_must_reproduce_the_fp32_model(optimized, tmp_path):
    path, calibration = optimized
    check_fp32_artifact(shutil.copyfile(path, tmp_path / "copy.onnx"), path, calibration,
                        "digits.onnx")                                     # the same model: fine
    other = perturbed_copy(path, tmp_path / "other.onnx")                  # 1 % weight noise
    with pytest.raises(InternalError, match=r"labelled fp32 for digits.onnx.*sample 0: output 0"):
        check_fp32_artifact(other, path, calibration, "digits.onnx")
