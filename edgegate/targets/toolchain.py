"""Versions of everything that produced a number, read without importing heavy frameworks."""

from __future__ import annotations

import os
import platform
import sys

from edgegate import __version__
from edgegate._deps import version_of
from edgegate.targets.base import cpu_name

DISTRIBUTIONS = ["numpy", "onnx", "onnxruntime", "torch", "onnxscript", "tensorflow",
                 "tensorflow-cpu", "tf2onnx", "onnx2tf", "ai-edge-litert", "coremltools",
                 "tensorrt", "openvino", "nncf", "pydantic", "jinja2"]


def toolchain() -> dict[str, str | None]:
    out: dict[str, str | None] = {"edgegate": __version__, "python": platform.python_version()}
    for dist in DISTRIBUTIONS:
        v = version_of(dist)
        if v is not None:
            out[dist] = v
    return out


def machine() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon") if f" {f}" in flags]
    return {"os": platform.system(), "arch": platform.machine(), "cpu": cpu_name(),
            "cores": cores, "isa": isa, "python": sys.version.split()[0],
            "ci": os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("CI") == "true"}
