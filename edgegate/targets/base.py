"""The contracts every target keeps: compile to an artifact, load it into a runner with infer(feed)."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgegate.config.load import ResolvedDevice
from edgegate.config.schema import BenchmarkSpec, QuantizationSpec
from edgegate.data.sources import Dataset
from edgegate.stages.analyze import ModelInfo


class Runner(Protocol):
    """A loaded artifact. ``measurement`` says where numbers taken with it were measured."""

    measurement: dict

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class CompileJob:
    """Everything a target needs to compile one model for one device."""

    model_path: Path              # the optimized FP32 ONNX model
    source_path: Path             # the ONNX model as loaded from the repository
    info: ModelInfo
    calibration: Dataset
    evaluation: Dataset
    device: ResolvedDevice
    quantization: QuantizationSpec
    benchmark: BenchmarkSpec
    workdir: Path
    display: str
    name: str
    source: Any = None            # the frontend's SourceModel (e.g. a torch module for Core ML)
    task: Any = None              # stages.fidelity.TaskInfo: what the gate will judge fidelity by


@dataclass
class Compiled:
    """A target's output: the artifact, the FP32 baseline on the same runtime, and the details."""

    artifact: Path
    precision: str
    format: str
    baseline: Path | None                     # FP32 model on the same runtime, for speedup
    quantization: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measurable: bool = True                   # False when this machine cannot run the artifact
    not_measurable_reason: str | None = None
    extra_files: list[Path] = field(default_factory=list)
    input_binding: dict[str, dict] | None = None  # see report.model.Artifact.input_binding


def binding_of(perms: dict | None = None, names: dict | None = None) -> dict[str, dict] | None:
    """The artifact's input binding from per-input transposes and input names."""
    binding: dict[str, dict] = {}
    for k, v in (perms or {}).items():
        if v:
            binding.setdefault(k, {})["transpose"] = [int(i) for i in v]
    for k, v in (names or {}).items():
        if v and v != k:
            binding.setdefault(k, {})["name"] = v
    return binding or None


def perms_of(binding: dict | None) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v["transpose"]) for k, v in (binding or {}).items() if v.get("transpose")}


def names_of(binding: dict | None) -> dict[str, str]:
    return {k: v["name"] for k, v in (binding or {}).items() if v.get("name")}


def host_machine() -> str:
    return f"{platform.system()} {platform.machine()}, {cpu_name()}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
