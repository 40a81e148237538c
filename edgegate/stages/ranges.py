"""Activation ranges over the whole calibration set, and the nodes INT8 cannot represent.

A tensor holding ±inf, NaN or a magnitude this large (an attention mask filled with -inf or
float32's minimum, a "very negative" logit) cannot be INT8: its calibrated range is not finite,
or so wide that every ordinary value rounds to zero. Ranges come from ONNX Runtime's own MinMax
calibrator run over every calibration sample, so a value that appears only on the 9th sample (or
the 200th) is found, and the ranges are stored in ONNX Runtime's calibration cache format, which
``quantize_static(calibration_cache_path=...)`` reads back without calibrating again.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgegate.data.sources import Dataset

EXTREME = 1e9
PROTO_LIMIT = (1 << 31) - (1 << 24)   # larger: external data (as stages/optimize.py)
CHUNK = 32          # calibration samples per collection pass: bounds the outputs held in memory
WHY_FLOAT = ": INT8 cannot represent it (a mask or fill value?), so this node stays in float"


def stat_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def describe_values(values) -> str | None:
    """Why a constant's values cannot be INT8 ('holds -inf', 'holds values of magnitude ...')."""
    arr = np.asarray(values)
    if arr.dtype.kind != "f" or arr.size == 0:
        return None
    return _describe(arr.astype(np.float32, copy=False).ravel())


def _describe(arr: np.ndarray) -> str | None:
    if not np.isfinite(arr).all():
        kinds = [k for k, f in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf))
                 if f(arr).any()]
        return "holds " + "/".join(kinds)
    peak = float(np.abs(arr).max())
    return f"holds values of magnitude {peak:.3g}" if peak >= EXTREME else None


def minmax_ranges(src: Path, calibration: Dataset, cache: Path) -> Path:
    """Calibrate every float tensor of every node with ONNX Runtime's MinMax calibrator over all
    calibration samples (in chunks that fold into one range) and write the ranges to ``cache``
    in ONNX Runtime's calibration cache format. Raises what the calibrator raises."""
    from onnxruntime.quantization.calibrate import (CalibrationMethod, create_calibrator,
                                                    save_tensors_data)

    from edgegate.stages.quantize import CalibrationReader

    with tempfile.TemporaryDirectory(prefix="edgegate-ranges-") as tmp:
        calibrator = create_calibrator(
            Path(src), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=stat_size(src) > PROTO_LIMIT,
            providers=["CPUExecutionProvider"], extra_options={})
        reader = CalibrationReader(calibration)
        for start in range(0, len(calibration), CHUNK):
            reader.set_range(start, start + CHUNK)
            calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), cache)
        del calibrator
    return cache


def read_ranges(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from onnxruntime.quantization.calibrate import load_tensors_data

    out = {}
    for name, data in load_tensors_data(cache).data.items():
        lo, hi = data.range_value
        out[name] = (np.asarray(lo, dtype=np.float64).ravel(), np.asarray(hi, dtype=np.float64).ravel())
    return out


def bad_ranges(cache: Path, samples: int) -> dict[str, str]:
    """Tensors whose calibrated range is non-finite or extreme, with the reason."""
    bad = {}
    for name, (lo, hi) in read_ranges(cache).items():
        why = _describe(np.concatenate([lo, hi])) if lo.size + hi.size else None
        if why:
            shown = f"[{_fmt(lo)}, {_fmt(hi)}]"
            bad[name] = (f"tensor '{name}' {why} on the calibration samples (range {shown} "
                         f"over all {samples})")
    return bad


def _fmt(v: np.ndarray) -> str:
    return f"{float(v.min()):.3g}" if v.size == 1 else f"{float(v.min()):.3g}..{float(v.max()):.3g}"


def bad_constants(graph: onnx.GraphProto) -> dict[str, str]:
    """Initializers and Constant-node outputs holding non-finite or extreme values."""
    from onnx import numpy_helper

    bad = {}
    for init in graph.initializer:
        if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                              onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16):
            why = describe_values(numpy_helper.to_array(init))
            if why:
                bad[init.name] = f"constant '{init.name}' {why}"
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    why = describe_values(numpy_helper.to_array(a.t))
                    if why:
                        bad[node.output[0]] = f"constant '{node.output[0]}' {why}"
    return bad


def nodes_touching(graph: onnx.GraphProto, bad: dict[str, str]) -> dict[str, str]:
    """Every named node (Constant nodes aside) that produces or consumes a bad tensor, with the
    tensor's reason."""
    nodes: dict[str, str] = {}
    for node in graph.node:
        if not node.name or node.op_type == "Constant":
            continue
        hit = next((t for t in [*node.input, *node.output] if t in bad), None)
        if hit is not None:
            nodes[node.name] = bad[hit] + WHY_FLOAT
    return nodes


# (model path, mtime, size, calibration object) -> (cache file with MinMax ranges, forced nodes)
_SEEN: dict[tuple, tuple[Path | None, dict[str, str]]] = {}
_DIR: list[str] = []


def _key(src: Path, calibration: Dataset) -> tuple:
    stat = src.stat()
    return (str(src), stat.st_mtime_ns, stat.st_size, id(calibration))


def unrepresentable(src: Path, calibration: Dataset) -> dict[str, str]:
    """Nodes that must stay in float, with the reason: those producing or consuming a constant,
    or a tensor whose MinMax range over *all* calibration samples, is non-finite or extreme.
    Computed once per model file and calibration set. If calibration cannot run, only the
    constants are checked; ``quantize`` checks the ranges of its own calibration again."""
    key = _key(src, calibration)
    if key not in _SEEN:
        large = stat_size(src) > PROTO_LIMIT        # weights not loaded: constants unchecked
        graph = onnx.load(str(src), load_external_data=not large).graph
        bad = {} if large else bad_constants(graph)
        cache: Path | None = None
        try:
            if not _DIR:
                _DIR.append(tempfile.mkdtemp(prefix="edgegate-ranges-"))
                atexit.register(shutil.rmtree, _DIR[0], True)
            cache = Path(_DIR[0]) / f"minmax-{len(_SEEN)}.json"
            minmax_ranges(src, calibration, cache)
            bad.update({t: why for t, why in bad_ranges(cache, len(calibration)).items()
                        if t not in bad})
        except Exception:     # quantize_static reports a calibration that cannot run
            cache = None
        _SEEN[key] = (cache, nodes_touching(graph, bad))
    return dict(_SEEN[key][1])


def seed_cache(src: Path, calibration: Dataset, cache: Path) -> bool:
    """Copy the MinMax ranges already computed for this model and calibration set into
    ``cache`` (quantize_static then skips calibrating). False when there are none."""
    seen = _SEEN.get(_key(src, calibration))
    if not seen or seen[0] is None or not seen[0].is_file() or cache.exists():
        return False
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seen[0], cache)
    return True
