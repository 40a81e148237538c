"""Graph optimization before quantization: shape inference plus ONNX Runtime's basic fusions."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from edgegate.errors import ConversionError


def optimize(src: Path, dst: Path, display: str) -> tuple[Path, list[str]]:
    """ONNX Runtime's quantization pre-processing (symbolic shape inference, constant folding,
    Conv+BN fusion, ONNX shape inference). Falls back step by step for models it cannot handle
    (dynamic shapes, control flow) and says which steps were skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes: list[str] = []
    upgraded, note = upgrade_opset(src, dst.with_name(dst.stem + "-opset.onnx"))
    if note:
        notes.append(note)
    src = upgraded or src
    attempts = [
        ({}, None),
        ({"skip_symbolic_shape": True}, "symbolic shape inference failed; skipped it"),
        ({"skip_symbolic_shape": True, "skip_optimization": True},
         "graph optimization failed; quantizing the graph as exported"),
    ]
    last: Exception | None = None
    large = src.stat().st_size > (1 << 31) - (1 << 24)
    for kwargs, note in attempts:
        try:
            logging.getLogger().setLevel(logging.ERROR)
            quant_pre_process(str(src), str(dst), save_as_external_data=large,
                              all_tensors_to_one_file=True, **kwargs)
            onnx.checker.check_model(str(dst))
            if note:
                notes.append(note)
            return dst, notes
        except Exception as exc:  # each toolchain step raises its own types
            last = exc
            continue
    raise ConversionError(f"ONNX graph optimization failed: {type(last).__name__}: {str(last)[:300]}",
                          file=display, fix="check that the model runs in ONNX Runtime as committed")


# QDQ per-channel (DequantizeLinear with an axis, int32 biases) needs opset 13. ONNX Runtime's
# quantizer only rewrites the opset number of an older model, which leaves ops whose meaning
# changed at 13 (Squeeze, Unsqueeze, Split, ReduceSum, Softmax...) invalid: convert them properly.
MIN_QDQ_OPSET = 13


def upgrade_opset(src: Path, dst: Path) -> tuple[Path | None, str | None]:
    """Convert a model below opset 13 with onnx's version converter, checked by loading it in
    ONNX Runtime. Returns (converted path or None, a note for the report)."""
    model = onnx.load(str(src), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= MIN_QDQ_OPSET or src.stat().st_size > (1 << 31) - (1 << 24):
        return None, None
    try:
        import onnxruntime as ort
        from onnx import version_converter

        converted = version_converter.convert_version(onnx.load(str(src)), MIN_QDQ_OPSET)
        onnx.checker.check_model(converted)
        onnx.save(converted, str(dst))
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception as exc:  # the converter and ORT raise their own types
        dst.unlink(missing_ok=True)
        return None, (f"opset {opset} could not be converted to {MIN_QDQ_OPSET} "
                      f"({type(exc).__name__}: {str(exc)[:200]}); INT8 QDQ needs opset "
                      f"{MIN_QDQ_OPSET}: re-export the model at opset {MIN_QDQ_OPSET} or newer")
    return dst, f"opset {opset} converted to {MIN_QDQ_OPSET} (INT8 QDQ needs opset {MIN_QDQ_OPSET})"
