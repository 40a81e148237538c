"""ONNX Runtime static quantization: QDQ, per-channel, calibration methods, excluded nodes."""

import onnx
import pytest
from onnx import numpy_helper

from edgegate.config.schema import ModelSpec
from edgegate.data import prepare_data
from edgegate.stages.analyze import analyze
from edgegate.stages.optimize import optimize
from edgegate.stages.quantize import classify_nodes, quantize


@pytest.fixture
def prepared(digits_onnx, tmp_path):
    model = onnx.load(str(digits_onnx / "digits.onnx"))
    info = analyze(model)
    data = prepare_data(ModelSpec(path="digits.onnx", calibration={"data": "data/calibration.npz",
                                                                   "samples": 64}),
                        info.inputs, digits_onnx)
    optimized, _ = optimize(digits_onnx / "digits.onnx", tmp_path / "opt.onnx", "digits.onnx")
    return optimized, data, info


def _scales(path):
    model = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[1]: float(init[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in init and init[n.input[1]].size == 1}


def test_qdq_per_channel_and_node_accounting(prepared, tmp_path):
    optimized, data, info = prepared
    q = quantize(optimized, tmp_path / "q.onnx", data.calibration, activation_type="uint8")
    model = onnx.load(str(q.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert len(q.quantized_nodes) >= 5 and q.float_nodes == []
    # per-channel: a conv weight's scale has one entry per output channel
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert any(v.ndim == 1 and v.size > 1 and "scale" in k for k, v in init.items())
    assert info.op_counts["Conv"] == 4 and info.total_macs > 1_000_000


def test_calibration_method_changes_the_ranges(prepared, tmp_path):
    optimized, data, _ = prepared
    a = quantize(optimized, tmp_path / "minmax.onnx", data.calibration, activation_type="uint8",
                 method="minmax")
    b = quantize(optimized, tmp_path / "pct.onnx", data.calibration, activation_type="uint8",
                 method="percentile")
    sa, sb = _scales(a.path), _scales(b.path)
    shared = set(sa) & set(sb)
    assert shared and any(abs(sa[k] - sb[k]) > 1e-9 for k in shared)


def test_excluded_node_stays_float(prepared, tmp_path):
    optimized, data, _ = prepared
    model = onnx.load(str(optimized))
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    q = quantize(optimized, tmp_path / "q.onnx", data.calibration, activation_type="uint8",
                 exclude=[first_conv])
    assert first_conv in q.float_nodes and first_conv not in q.quantized_nodes
    assert classify_nodes(onnx.load(str(q.path)))[1] == q.float_nodes


def test_every_calibration_sample_counts(prepared, tmp_path):
    """Memory-bounded (strided) MinMax calibration gives the ranges of one pass over all samples."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgegate.stages.quantize import CalibrationReader

    optimized, data, _ = prepared
    assert len(data.calibration) == 64
    ours = quantize(optimized, tmp_path / "ours.onnx", data.calibration, activation_type="uint8")
    quantize_static(str(optimized), str(tmp_path / "plain.onnx"), CalibrationReader(data.calibration),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    a, b = _scales(ours.path), _scales(tmp_path / "plain.onnx")
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(b[k])) for k in a)
