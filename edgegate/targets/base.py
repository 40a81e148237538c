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
