"""The FP32 floor: the fastest faithful artifact that needs no compression.

When nothing compressed is faster than FP32 on the target, the user still gets the model with
ONNX Runtime's extended graph optimizations (constant folding, Conv+activation and GELU/LayerNorm
fusions...) applied offline and saved, so that what ships is at least as fast as the model
itself. The saved graph is trusted only after it loads in a fresh session and reproduces the
source outputs to float tolerance on calibration samples; otherwise the floor is a plain copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from edgegate.data.sources import Dataset

LEVEL = "ORT_ENABLE_EXTENDED"
CHECK_SAMPLES = 4
RTOL, ATOL = 1e-3, 1e-4         # relative to each output's magnitude: fusions reorder float sums
# a model this large needs external data: the offline optimizer is not worth the risk there
SIZE_LIMIT = (1 << 31) - (1 << 24)
OPTIMIZED = f"the FP32 graph optimized offline by ONNX Runtime ({LEVEL})"


def fp32_floor(src: Path, dst: Path, samples: Dataset, display: str = "") -> tuple[Path, str]:
    """Write the FP32 floor of ``src`` to ``dst``; returns (dst, what it is, in one sentence)."""
    why = _optimize(src, dst, samples)
    if why is None:
        return dst, OPTIMIZED
    dst.unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    return dst, f"the FP32 model as given (ONNX Runtime's offline optimization not used: {why})"


def _session(path_or_bytes, level, out: Path | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = level
    if out is not None:
        opts.optimized_model_filepath = str(out)
    return ort.InferenceSession(str(path_or_bytes), opts, providers=["CPUExecutionProvider"])


def _optimize(src: Path, dst: Path, samples: Dataset) -> str | None:
    """None when dst holds a verified optimized graph, else why not."""
    import onnxruntime as ort

    data = src.with_name(src.name + ".data")
    if src.stat().st_size > SIZE_LIMIT or data.is_file():
        return "the model keeps its weights in external data"
    try:
        _session(src, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, dst)
        if not dst.is_file():
            return "ONNX Runtime wrote no optimized model"
        plain = _session(src, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        fresh = _session(dst, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    except Exception as exc:      # the optimizer or the reload failed: the plain copy is safe
        return f"{type(exc).__name__}: {str(exc)[:160]}"
    names = [o.name for o in plain.get_outputs()]
    if [o.name for o in fresh.get_outputs()] != names:
        return "the optimized graph has different outputs"
    if not len(samples):
        return "no calibration samples to verify it on"
    for i in range(min(CHECK_SAMPLES, len(samples))):
        feed = samples.feed(i)
        try:
            want, got = plain.run(names, feed), fresh.run(names, feed)
        except Exception as exc:
            return f"it does not run on calibration sample {i}: {str(exc)[:160]}"
        for name, a, b in zip(names, want, got):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                return f"output '{name}' changed shape on calibration sample {i}"
            if a.dtype.kind == "f":
                scale = float(np.max(np.abs(a))) if a.size else 0.0
                if not np.allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, scale), equal_nan=True):
                    return f"output '{name}' differs beyond float tolerance on calibration sample {i}"
            elif not np.array_equal(a, b):
                return f"output '{name}' differs on calibration sample {i}"
    return None
