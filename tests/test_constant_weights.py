"""Weights held in Constant nodes (Paddle and some exporters write them so): folded into
initializers before quantization, so Conv/MatMul weights quantize; If/Loop bodies keep theirs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgegate.data.sources import Dataset
from edgegate.stages.optimize import fold_constants, optimize
from edgegate.stages.quantize import classify_nodes, quantize


def as_constant_nodes(src, dst):
    """The same trained model with every initializer turned into a Constant node."""
    model = onnx.load(str(src))
    graph = model.graph
    consts = [helper.make_node("Constant", [], [t.name], name=f"const_{t.name}", value=t)
              for t in graph.initializer]
    del graph.initializer[:]
    nodes = consts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture
def constant_cnn(digits_onnx_cached, tmp_path):
    path = as_constant_nodes(digits_onnx_cached / "digits.onnx", tmp_path / "const.onnx")
    cal = np.load(digits_onnx_cached / "data" / "calibration.npz")["input"][:64]
    return path, Dataset({"input": cal}, None, {}), digits_onnx_cached / "digits.onnx"


def _run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_constant_weights_are_folded_and_quantize(constant_cnn, tmp_path):
    path, calibration, original = constant_cnn
    model = onnx.load(str(path))
    assert not model.graph.initializer and sum(n.op_type == "Constant" for n in model.graph.node) >= 8

    # as they are, ONNX Runtime's quantizer sees no weights: nothing is stored INT8
    raw = quantize(path, tmp_path / "raw.onnx", calibration, activation_type="uint8")
    assert path.stat().st_size / raw.path.stat().st_size < 1.5

    folded, notes = fold_constants(path, tmp_path / "folded.onnx")
    assert folded is not None and notes[0].startswith("folded ") and "parameters" in notes[0]
    graph = onnx.load(str(folded)).graph
    assert not [n for n in graph.node if n.op_type == "Constant"]
    assert {t.name for t in graph.initializer} == {t.name for t in onnx.load(str(original)).graph.initializer}
    x = calibration.inputs["input"][:16]
    np.testing.assert_array_equal(_run(folded, x), _run(path, x))

    # through the optimization stage, with the note in the report's optimization notes
    optimized, opt_notes = optimize(path, tmp_path / "opt.onnx", "const.onnx")
    assert any(n.startswith("folded ") and "so they quantize" in n for n in opt_notes)
    q = quantize(optimized, tmp_path / "q.onnx", calibration, activation_type="uint8")
    ops = {n.name: n.op_type for n in onnx.load(str(optimized)).graph.node}
    compute = {n for n, t in ops.items() if t in ("Conv", "Gemm", "MatMul")}
    assert set(classify_nodes(onnx.load(str(q.path)))[0]) >= compute and len(compute) >= 5
    assert path.stat().st_size / q.path.stat().st_size >= 3.0


def test_outer_scope_constants_fold_and_bodies_keep_theirs(tmp_path):
    # a main-graph Constant read inside an If branch becomes an initializer the branch still
    # sees; the Constant inside the other branch stays in that branch
    outer = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    then_g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])])
    else_g = helper.make_graph(
        [helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
            np.full(4, 2, np.float32), "k")), helper.make_node("Mul", ["x", "k"], ["e"])],
        "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], name="w_const", value=outer),
         helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    src = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    folded, notes = fold_constants(src, tmp_path / "if-folded.onnx")
    assert folded is not None
    assert notes[0].startswith("1 Constant nodes inside If/Loop/Scan bodies left there")
    assert notes[1].startswith("folded 1 Constant nodes (4 parameters)")
    model = onnx.load(str(folded))
    assert [t.name for t in model.graph.initializer] == ["w"]
    assert [n.op_type for n in model.graph.node] == ["If"]
    x = np.ones(4, np.float32)
    for c in (True, False):
        feed = {"x": x, "c": np.array(c)}
        a = ort.InferenceSession(str(src)).run(None, feed)[0]
        b = ort.InferenceSession(str(folded)).run(None, feed)[0]
        np.testing.assert_array_equal(a, b)


def test_a_model_without_constant_nodes_is_left_alone(digits_onnx, tmp_path):
    assert fold_constants(digits_onnx / "digits.onnx", tmp_path / "x.onnx") == (None, [])
