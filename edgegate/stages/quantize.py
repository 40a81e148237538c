"""ONNX Runtime static INT8 quantization (QDQ), calibrated on a calibration source."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgegate.data.sources import Dataset
from edgegate.errors import ConversionError

COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM", "GRU"}
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over a Dataset (the one calibration contract)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._i = 0
        self._end = len(dataset)

    def get_next(self):
        if self._i >= self._end:
            return None
        feed = self.dataset.feed(self._i)
        self._i += 1
        return feed

    def rewind(self):
        self._i = 0

    def set_range(self, start_index: int, end_index: int):
        self._i, self._end = start_index, min(end_index, len(self.dataset))

    def __len__(self):
        return len(self.dataset)


@dataclass
class Quantized:
    path: Path
    activation_type: str
    weight_type: str
    per_channel: bool
    calibration_method: str
    quantized_nodes: list[str] = field(default_factory=list)
    float_nodes: list[str] = field(default_factory=list)   # compute nodes left in float
    excluded: list[str] = field(default_factory=list)


# A tensor holding ±inf, NaN or a magnitude this large (an attention mask filled with -inf or
# float32's minimum, a "very negative" logit) cannot be INT8: the calibrated range is not finite,
# or so wide that every ordinary value rounds to zero.
EXTREME = 1e9
_FLOAT_ONLY: dict[tuple, dict[str, str]] = {}


def float_only_nodes(src: Path, calibration: Dataset, skip=(), samples: int = 8) -> dict[str, str]:
    """Nodes that must stay in float, with the reason: those that produce or consume a tensor
    that holds a non-finite or extreme value, in a constant or on the first calibration samples.
    The model is run once with every intermediate tensor as an output. A model this cannot run
    (too large, an op the probe cannot feed) gets no forced nodes: quantization then reports its
    own error. Nodes in ``skip`` (already excluded by the user) are left out."""
    stat = src.stat()
    key = (str(src), stat.st_mtime_ns, stat.st_size, id(calibration))
    if key not in _FLOAT_ONLY:
        try:
            _FLOAT_ONLY[key] = _float_only(src, calibration, samples)
        except Exception:    # a probe, never a verdict: quantize_static reports real failures
            _FLOAT_ONLY[key] = {}
    return {n: why for n, why in _FLOAT_ONLY[key].items() if n not in skip}


def _describe(values) -> str | None:
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind != "f" or arr.size == 0:
        return None
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        kinds = [k for k, f in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf))
                 if f(arr).any()]
        return "holds " + "/".join(kinds)
    peak = float(np.abs(arr).max())
    return f"holds values of magnitude {peak:.3g}" if peak >= EXTREME else None


def _float_only(src: Path, calibration: Dataset, samples: int) -> dict[str, str]:
    import onnxruntime as ort
    from onnx import numpy_helper

    if stat_size(src) > (1 << 31) - (1 << 26):
        return {}
    model = onnx.load(str(src))
    graph = model.graph
    bad: dict[str, str] = {}
    for init in graph.initializer:
        why = _describe(numpy_helper.to_array(init))
        if why:
            bad[init.name] = f"constant '{init.name}' {why}"
    constants = set()
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            constants.add(node.output[0])
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    why = _describe(numpy_helper.to_array(a.t))
                    if why:
                        bad[node.output[0]] = f"constant '{node.output[0]}' {why}"
    uses = [(n.name, [*n.input, *n.output]) for n in graph.node
            if n.name and n.op_type != "Constant"]
    present = {o.name for o in graph.output}
    for node in graph.node:
        for out in node.output:
            if out and out not in present and out not in constants:
                graph.output.append(onnx.ValueInfoProto(name=out))
                present.add(out)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del model
    names = [o.name for o in session.get_outputs()]
    for i in range(min(samples, len(calibration))):
        for name, value in zip(names, session.run(None, calibration.feed(i))):
            if name not in bad:
                why = _describe(value)
                if why:
                    bad[name] = f"tensor '{name}' {why} on calibration sample {i}"
    if not bad:
        return {}
    nodes: dict[str, str] = {}
    for name, tensors in uses:
        hit = next((t for t in tensors if t in bad), None)
        if hit is not None:
            nodes[name] = (bad[hit] + ": INT8 cannot represent it (a mask or fill value?), so "
                           "this node stays in float")
    return nodes


def stat_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _stride(n: int, most: int = 32) -> int | None:
    """The largest divisor of n that is at most ``most`` (onnxruntime needs an exact division)."""
    if n <= most:
        return None
    best = max(d for d in range(1, most + 1) if n % d == 0)
    return best if best >= 8 else None


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def quantize(src: Path, dst: Path, calibration: Dataset, *, activation_type: str,
             weight_type: str = "int8", per_channel: bool = True, method: str = "minmax",
             exclude: list[str] | None = None, op_types: list[str] | None = None,
             cache: Path | None = None, display: str = "",
             nodes: list[str] | None = None, extra_options: dict | None = None) -> Quantized:
    """Static INT8 (QDQ). ``nodes`` limits quantization to those nodes (None: every node not
    in ``exclude``); ``cache`` shares one calibration pass between configurations."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    # Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 the MinMax calibrator *discards* each
    # full chunk instead of folding it into the ranges, so only the last partial chunk counted.
    # Strided MinMax folds every stride into the ranges and bounds memory the same way.
    extra: dict = {}
    stride = _stride(len(calibration)) if method == "minmax" else None
    if stride:
        extra["CalibStridedMinMax"] = stride
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    extra.update(extra_options or {})        # e.g. TensorRT: ActivationSymmetric
    kwargs = {}
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):   # histogram calibrators print progress
            quantize_static(
                str(src), str(dst), CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                per_channel=per_channel, activation_type=_qtype(activation_type),
                weight_type=_qtype(weight_type),
                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                nodes_to_exclude=list(exclude or []), op_types_to_quantize=op_types,
                nodes_to_quantize=list(nodes) if nodes is not None else None,
                use_external_data_format=src.stat().st_size > (1 << 31) - (1 << 24),
                extra_options=extra, **kwargs)
    except Exception as exc:
        raise ConversionError(f"INT8 quantization failed: {type(exc).__name__}: {str(exc)[:300]}",
                              file=display,
                              fix="exclude the failing node (quantization.exclude_nodes) or check "
                                  "the calibration data") from None
    q_nodes, f_nodes = classify_nodes(onnx.load(str(dst), load_external_data=False))
    return Quantized(dst, activation_type, weight_type, per_channel, method, q_nodes, f_nodes,
                     list(exclude or []))


def classify_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """Compute nodes whose data inputs all arrive through DequantizeLinear run quantized."""
    produced_by = {}
    for node in model.graph.node:
        for out in node.output:
            produced_by[out] = node.op_type
    init = {i.name for i in model.graph.initializer}
    quantized, floating = [], []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        data_inputs = [i for i in node.input[:2] if i]
        if data_inputs and all(produced_by.get(i) == "DequantizeLinear" for i in data_inputs):
            quantized.append(node.name)
        elif data_inputs and not all(i in init for i in data_inputs):
            floating.append(node.name)
    return quantized, floating


def quantize_dynamic_int8(src: Path, dst: Path, display: str = "") -> Path:
    """Dynamic INT8 of MatMul/Gemm: weights stored INT8, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
    except Exception as exc:
        raise ConversionError(f"dynamic INT8 quantization failed: {type(exc).__name__}: "
                              f"{str(exc)[:300]}", file=display,
                              fix="use quantization.level: balanced (static INT8)") from None
    return dst


def convert_fp16(src: Path, dst: Path, display: str = "") -> Path:
    """FP16 weights and compute, FP32 inputs and outputs (onnxconverter-common)."""
    from edgegate._deps import require

    float16 = require("onnxconverter_common.float16", extra="all")
    try:
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    except Exception as exc:
        raise ConversionError(f"FP16 conversion failed: {type(exc).__name__}: {str(exc)[:300]}",
                              file=display, fix="use quantization.level: balanced") from None
    return dst
