"""Target back-ends. The registry is data: listing it imports nothing heavy.

Each entry names the class that implements the target, the pip extra that provides it, the
modules it needs and what hardware or OS it needs to *run* (compiling may still work without).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import import_module

from edgegate._deps import available, install_hint


@dataclass(frozen=True)
class TargetEntry:
    id: str
    ref: str
    extra: str | None
    modules: tuple[str, ...]
    runs_on: str                       # human words: what it needs to run
    needs_cuda: bool = False
    needs_macos: bool = False
    measure_modules: tuple[str, ...] = ()   # needed to run/measure, not to compile
    # what the runner imports ("module" or "module:function"): the memory measurement imports it
    # before it takes the process's baseline, so the runtime's own code is not the model's memory
    runtime: str | None = None


# What onnx2tf (targets/onnx_to_tf.py, shared by tflite and coreml) imports: it imports tf_keras and
# sng4onnx without declaring them.
ONNX_TO_TF = ("onnx2tf", "tensorflow", "tf_keras", "onnx_graphsurgeon", "sng4onnx")

TARGETS: dict[str, TargetEntry] = {
    "onnxruntime": TargetEntry("onnxruntime", "edgegate.targets.onnxruntime:OnnxRuntimeTarget",
                               None, ("onnxruntime",), "any CPU (ONNX Runtime CPU execution provider)",
                               runtime="onnxruntime"),
    "tflite": TargetEntry("tflite", "edgegate.targets.tflite:TFLiteTarget", "tflite",
                          ONNX_TO_TF + ("ai_edge_litert",),
                          "any CPU (LiteRT interpreter with XNNPACK)",
                          runtime="ai_edge_litert.interpreter"),
    "coreml": TargetEntry("coreml", "edgegate.targets.coreml:CoreMLTarget", "coreml",
                          ("coremltools",) + ONNX_TO_TF, "macOS for prediction; builds anywhere",
                          needs_macos=True, runtime="coremltools"),
    "tensorrt": TargetEntry("tensorrt", "edgegate.targets.tensorrt:TensorRTTarget", "tensorrt",
                            ("onnxruntime",), "an NVIDIA CUDA device with TensorRT", needs_cuda=True,
                            measure_modules=("tensorrt",), runtime="tensorrt"),
    "openvino": TargetEntry("openvino", "edgegate.targets.openvino:OpenVinoTarget", "openvino",
                            ("openvino", "nncf"), "x86-64 CPUs (OpenVINO CPU plugin; NNCF INT8)",
                            runtime="edgegate.targets.openvino:import_openvino"),
}


@dataclass(frozen=True)
class Availability:
    id: str
    can_compile: bool
    can_measure: bool
    reason: str
    install_hint: str | None


def availability(target_id: str) -> Availability:
    entry = TARGETS[target_id]
    missing = [m for m in entry.modules if not available(m)]
    if missing:
        return Availability(target_id, False, False,
                            f"not installed: {', '.join(missing)}", install_hint(entry.extra, missing))
    if entry.needs_macos and platform.system() != "Darwin":
        return Availability(target_id, True, False,
                            "builds and validates here; prediction needs macOS", None)
    if entry.needs_cuda and not _has_cuda():
        return Availability(target_id, True, False,
                            "no CUDA device on this machine: ships the QDQ ONNX and the engine-build "
                            "command; engine metrics not measurable here", None)
    missing = [m for m in entry.measure_modules if not available(m)]
    if missing:
        return Availability(target_id, True, False,
                            f"builds here; measuring needs {', '.join(missing)}",
                            install_hint(entry.extra, missing))
    return Availability(target_id, True, True, entry.runs_on, None)


def _has_cuda() -> bool:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def load_target(target_id: str):
    from edgegate.errors import ConfigError

    entry = TARGETS.get(target_id)
    if entry is None:
        raise ConfigError(f"unknown target '{target_id}'", value=target_id,
                          fix="use one of " + ", ".join(TARGETS))
    module_name, cls = entry.ref.split(":")
    return getattr(import_module(module_name), cls)()
