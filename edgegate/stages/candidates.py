"""One configuration the precision search builds, and the built candidate model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgegate.stages.sensitivity import Quality


@dataclass(frozen=True)
class Cfg:
    precision: str = "int8"              # int8 | fp16 | int8-dynamic | fp32
    activation_type: str = "uint8"
    method: str = "minmax"
    per_channel: bool = True
    excluded: tuple[str, ...] = ()       # compute nodes kept in float by the search

    def to_dict(self) -> dict:
        if self.precision != "int8":
            return {"precision": self.precision}
        return {"precision": "int8", "activation_type": self.activation_type,
                "calibration_method": self.method, "per_channel": self.per_channel,
                "kept_in_float": list(self.excluded)}


@dataclass
class Built:
    cfg: Cfg
    path: Path
    quality: Quality | None = None
    record: dict = field(default_factory=dict)


def name(cfg: Cfg) -> str:
    return {"int8": "static INT8", "int8-dynamic": "dynamic INT8", "fp16": "FP16"}.get(
        cfg.precision, cfg.precision)
