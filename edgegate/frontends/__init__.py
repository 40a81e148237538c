"""Frontends turn a model file into ONNX. The registry is data: listing it imports nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class FrontendEntry:
    id: str
    ref: str                      # "module:Class"
    extra: str | None             # pip extra that provides it
    modules: tuple[str, ...] = () # what must be importable


FRONTENDS: dict[str, FrontendEntry] = {
    "onnx": FrontendEntry("onnx", "edgegate.frontends.onnx:OnnxFrontend", None, ("onnx",)),
    "pytorch": FrontendEntry("pytorch", "edgegate.frontends.pytorch:PyTorchFrontend", "pytorch",
                             ("torch", "onnxscript")),
    "tensorflow": FrontendEntry("tensorflow", "edgegate.frontends.tensorflow:TensorFlowFrontend",
                                "tensorflow", ("tensorflow", "tf2onnx")),
}


class Reference(Protocol):
    """The source model in its own framework: accuracy is measured against its outputs."""

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class SourceModel:
    """A loaded model: its ONNX form plus what the report needs to know about the source."""

    onnx_path: Path
    framework: str
    framework_version: str | None
    export: str                               # how the ONNX was obtained
    reference: Any = None                     # a Reference in the source framework
    details: dict = field(default_factory=dict)


def load_frontend(framework: str):
    from edgegate._deps import require
    from edgegate.errors import ConfigError

    entry = FRONTENDS.get(framework)
    if entry is None:
        raise ConfigError(f"unknown framework '{framework}'", value=framework,
                          fix="use one of " + ", ".join(FRONTENDS))
    if entry.extra:
        for module in entry.modules:
            require(module, extra=entry.extra)
    module_name, cls = entry.ref.split(":")
    return getattr(import_module(module_name), cls)()
