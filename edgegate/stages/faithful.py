"""Does one model reproduce another's outputs to float tolerance? (a copy, an offline-optimized
graph, an artifact labelled FP32: each must compute what the FP32 model computes)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

RTOL = 1e-4
ATOL = 1e-5          # scaled by the output's magnitude: max(1, max |reference|)


def mismatch(reference: list[np.ndarray], candidate: list[np.ndarray]) -> str | None:
    """How the candidate's outputs differ from the reference's, or None within tolerance."""
    if len(reference) != len(candidate):
        return f"{len(candidate)} outputs instead of {len(reference)}"
    for k, (ref, got) in enumerate(zip(reference, candidate)):
        ref, got = np.asarray(ref), np.asarray(got)
        if ref.shape != got.shape:
            return f"output {k} has shape {got.shape} instead of {ref.shape}"
        if ref.dtype.kind not in "fc":
            if not np.array_equal(ref, got):
                return f"output {k} ({ref.dtype}) differs"
            continue
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        finite = np.isfinite(ref64)
        if not np.array_equal(finite, np.isfinite(got64)) or \
                not np.array_equal(ref64[~finite], got64[~finite]):
            return f"output {k} differs in its non-finite values"
        scale = max(1.0, float(np.abs(ref64[finite]).max())) if finite.any() else 1.0
        err = np.abs(got64[finite] - ref64[finite])
        allowed = ATOL * scale + RTOL * np.abs(ref64[finite])
        if err.size and (err > allowed).any():
            return (f"output {k} differs by up to {float(err.max()):.3g} "
                    f"(allowed {ATOL:g} x {scale:.3g} + {RTOL:g} x |value|)")
    return None


def session(path: Path, threads: int | None = None, level=None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if level is not None:
        opts.graph_optimization_level = level
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def compare(reference: Path, candidate: Path, feeds: Iterable[dict], threads: int | None = None,
            reference_level=None) -> str | None:
    """The first mismatch between two models (their output names, then their outputs on the
    given feeds: 'sample i: ...'), or None.
    Each model is loaded in a fresh session (``reference_level``: the reference's graph
    optimization level, ONNX Runtime's default when None)."""
    a, b = session(reference, threads, reference_level), session(candidate, threads)
    names = [o.name for o in a.get_outputs()]
    got = [o.name for o in b.get_outputs()]
    if got != names:                   # consumers read outputs by name
        return f"outputs are named {got} instead of {names}"
    for i, feed in enumerate(feeds):
        why = mismatch(a.run(None, feed), b.run(None, feed))
        if why:
            return f"sample {i}: {why}"
    return None
