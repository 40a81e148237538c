"""ONNX Runtime static INT8 quantization (QDQ), calibrated on a calibration source."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgegate.data.sources import Dataset
from edgegate.errors import ConversionError
from edgegate.stages.ranges import (EXTREME, PROTO_LIMIT, bad_constants, bad_ranges,  # noqa: F401
                                     nodes_touching, seed_cache, stat_size, unrepresentable)

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
    forced: dict[str, str] = field(default_factory=dict)   # kept in float: non-finite ranges


def float_only_nodes(src: Path, calibration: Dataset, skip=(), samples: int | None = None
                     ) -> dict[str, str]:
    """Nodes that must stay in float, with the reason: those that produce or consume a tensor
    holding a non-finite or extreme value, in a constant or in its range calibrated over *every*
    calibration sample (stages/ranges.py). Nodes in ``skip`` (already excluded by the user) are
    left out. ``samples`` is accepted for old callers and ignored: no sample is skipped."""
    return {n: why for n, why in unrepresentable(src, calibration).items() if n not in skip}


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
    in ``exclude``); ``cache`` shares one calibration pass between configurations.

    The ranges are calibrated over every calibration sample and written to the calibration
    cache before quantizing. A tensor whose range there is non-finite or extreme is never
    quantized: every node producing or consuming it is kept in float (``Quantized.forced``, with
    the reason) and the model is quantized again from the cached ranges, without recalibrating."""
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
    excluded = list(exclude or [])
    forced: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgegate-quantize-") as tmp:
        ranges = cache if cache is not None else Path(tmp) / "ranges.json"
        kwargs = {}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            kwargs["calibration_cache_path"] = str(ranges)
            plain = not op_types and not any(k.startswith("Calib") and k != "CalibStridedMinMax"
                                              for k in extra)
            if method == "minmax" and plain:   # the ranges float_only_nodes already calibrated
                seed_cache(src, calibration, ranges)

        def attempt() -> Exception | None:
            logging.getLogger().setLevel(logging.ERROR)
            try:
                # histogram calibrators print; a [-inf, x] range warns before we catch it
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    quantize_static(
                        str(src), str(dst), CalibrationReader(calibration),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=_qtype(activation_type), weight_type=_qtype(weight_type),
                        calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                        nodes_to_exclude=excluded, op_types_to_quantize=op_types,
                        nodes_to_quantize=list(nodes) if nodes is not None else None,
                        use_external_data_format=src.stat().st_size > (1 << 31) - (1 << 24),
                        extra_options=extra, **kwargs)
            except Exception as exc:      # onnxruntime raises many types
                return exc
            return None

        error = attempt()
        if ranges.is_file():
            new = {n: why for n, why in _unquantizable(src, ranges, len(calibration),
                                                       constants=error is not None).items()
                   if n not in excluded}
            if new:
                forced.update(new)
                excluded += list(new)
                error = attempt()
    if error is not None and method != "minmax" and not forced:
        nonfinite = unrepresentable(src, calibration)
        if nonfinite:       # the histogram calibrators collect every tensor, excluded or not
            first = next(iter(nonfinite.values())).split(":")[0]
            raise ConversionError(
                f"INT8 quantization failed: {method} calibration builds a histogram of every "
                f"activation, and {len(nonfinite)} nodes touch a tensor it cannot bin ({first})",
                file=display, fix="use quantization.calibration_method: minmax, which keeps "
                                  "those nodes in float and quantizes the rest") from None
    if error is not None:
        held = f" ({len(forced)} nodes touching non-finite tensors kept in float)" if forced else ""
        raise ConversionError(f"INT8 quantization failed{held}: {type(error).__name__}: "
                              f"{str(error)[:300]}", file=display,
                              fix="exclude the failing node (quantization.exclude_nodes) or check "
                                  "the calibration data") from None
    q_nodes, f_nodes = classify_nodes(onnx.load(str(dst), load_external_data=False))
    return Quantized(dst, activation_type, weight_type, per_channel, method, q_nodes, f_nodes,
                     list(exclude or []), forced)


def _unquantizable(src: Path, ranges: Path, samples: int, constants: bool) -> dict[str, str]:
    """Nodes touching a tensor whose cached range is non-finite or extreme (and, after a failed
    attempt, a constant holding such values)."""
    bad = bad_ranges(ranges, samples)
    if not bad and not constants:
        return {}
    large = stat_size(src) > PROTO_LIMIT
    graph = onnx.load(str(src), load_external_data=constants and not large).graph
    if constants and not large:
        bad = {**bad_constants(graph), **bad}
    return nodes_touching(graph, bad)


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
