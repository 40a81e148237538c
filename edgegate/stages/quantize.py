"""ONNX Runtime static INT8 quantization (QDQ), calibrated on a calibration source."""

from __future__ import annotations

import inspect
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


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]


def quantize(src: Path, dst: Path, calibration: Dataset, *, activation_type: str,
             weight_type: str = "int8", per_channel: bool = True, method: str = "minmax",
             exclude: list[str] | None = None, op_types: list[str] | None = None,
             cache: Path | None = None, display: str = "") -> Quantized:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    extra = {"CalibMaxIntermediateOutputs": 64}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    kwargs = {}
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache)
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_static(
            str(src), str(dst), CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
            per_channel=per_channel, activation_type=_qtype(activation_type),
            weight_type=_qtype(weight_type),
            calibrate_method=getattr(CalibrationMethod, METHODS[method]),
            nodes_to_exclude=list(exclude or []), op_types_to_quantize=op_types,
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
