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
