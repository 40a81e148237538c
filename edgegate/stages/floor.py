"""The FP32 floor: the fastest faithful artifact that needs no compression.

When nothing compressed is faster than FP32 on the target, the user still gets the model with
ONNX Runtime's extended graph optimizations (constant folding, Conv+activation and GELU/LayerNorm
fusions...) applied offline and saved, so that what ships is at least as fast as the model
itself. The graph is written and verified by ``stages.optimize.optimize_offline`` (the one
offline-optimization path): trusted only after it loads in a fresh session and reproduces the
source outputs to float tolerance (``stages.faithful``) on calibration samples; otherwise the
floor is a plain copy. This module only names what the floor is for the search's records.
"""

from __future__ import annotations

from pathlib import Path

from edgegate.data.sources import Dataset
from edgegate.stages.optimize import OFFLINE_LEVEL, optimize_offline

OPTIMIZED = f"the FP32 graph optimized offline by ONNX Runtime ({OFFLINE_LEVEL})"


def fp32_floor(src: Path, dst: Path, samples: Dataset | list[dict], display: str = ""
               ) -> tuple[Path, str]:
    """Write the FP32 floor of ``src`` to ``dst``; returns (dst, what it is, as a noun phrase).
    One thread: the saved graph does not depend on it, and the check does not compete with the
    search's timings on a shared machine."""
    path, note = optimize_offline(src, dst, 1, display, samples)
    if note is None:
        return path, OPTIMIZED
    return path, f"the FP32 model as given ({note})"
