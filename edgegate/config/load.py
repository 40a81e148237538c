"""Load edgegate.yml and policy files; every error names file, line, field, value and what is allowed."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgegate.config.policy_schema import LIMITS, DeviceProfile, PolicyFile
from edgegate.config.schema import Config
from edgegate.config.yamlfile import Sourced, load_yaml
from edgegate.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], doc: Sourced) -> M:
    if doc.data is None:
        raise ConfigError("the file is empty", file=doc.file, fix="start it with 'version: 1'")
    if not isinstance(doc.data, dict):
        raise ConfigError("the top level must be a mapping", file=doc.file, line=1,
                          value=type(doc.data).__name__, fix="start it with 'version: 1'")
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        field_name = ".".join(str(p) for p in loc) or "(top level)"
        more = f" ({len(exc.errors()) - 1} more problem(s) after this one)" if len(exc.errors()) > 1 else ""
        raise ConfigError(_explain(err) + more, file=doc.file, line=doc.line_of(loc),
                          field=field_name, value=err.get("input") if err["type"] != "missing" else None,
                          fix=_fix(err, model, loc)) from None


_UNION_TAGS = {"str", "CalibrationSpec", "list[int]", "int", "function-after[_known_metric(), str]"}


def _explain(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    return err["msg"]


def _fix(err: dict, model: type[BaseModel], loc: tuple) -> str:
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        if parent is not None:
            return "allowed keys here: " + ", ".join(parent.model_fields)
        return "remove the key"
    if err["type"] == "literal_error":
        return "use one of the allowed values above"
    if err["type"] == "missing":
        return f"add '{loc[-1]}'"
    return "see the JSON schema in schemas/ or docs/configuration.md"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            if current is PolicyFile or current is Config:
                return None
            return None
        current = _unwrap(info.annotation)
        if typing.get_origin(current) is dict and current is not None:
            current = _unwrap(typing.get_args(current)[1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin in (list, tuple) and args:
        return _unwrap(args[0])
    if origin is dict:
        return tp
    models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    if models:
        return models[0]
    return tp


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    source: Sourced
    root: Path


def load_config(path: str | Path, root: str | Path | None = None) -> LoadedConfig:
    """edgegate.yml; the repository root is its folder (as named: a link to a file elsewhere is
    refused by the path guard, never followed to make 'elsewhere' the root)."""
    from edgegate.discover.paths import safe_path

    path = Path(path)
    root = Path(root) if root is not None else Path(os.path.abspath(path)).parent
    display = _display(path, root)
    safe_path(root, path, what="configuration file", display=display)
    doc = load_yaml(path, display=display)
    return LoadedConfig(config=_validate(Config, doc), source=doc, root=root)


def load_policy(path: str | Path, display: str | None = None) -> tuple[PolicyFile, Sourced]:
    doc = load_yaml(path, display=display)
    return _validate(PolicyFile, doc), doc


def _display(path: Path, root: Path) -> str:
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(path)


# ------------------------------------------------------------------ device resolution


@dataclass(frozen=True)
class Limit:
    name: str
    value: float
    file: str
    line: int | None
    builtin: bool = False          # set by a built-in device profile, not by the repository

    @property
    def source(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def direction(self) -> str:
        return LIMITS[self.name][0]

    @property
    def metric(self) -> str:
        return LIMITS[self.name][1]


@dataclass(frozen=True)
class ResolvedDevice:
    id: str
    target: str
    profile: DeviceProfile
    limits: dict[str, Limit] = field(default_factory=dict)
    sources: tuple[str, ...] = ()


def builtin_policy_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_policies"
    if packaged.is_dir():
        return packaged
    return here.parent / "policies"


def builtin_profiles() -> list[tuple[PolicyFile, Sourced]]:
    out = []
    for file in sorted(builtin_policy_dir().glob("*.yml")):
        policy, doc = load_policy(file, display=f"policies/{file.name}")
        out.append((policy, dataclasses.replace(doc, builtin=True)))
    return out


def resolve_devices(policy_files: list[tuple[PolicyFile, Sourced]]) -> dict[str, ResolvedDevice]:
    """Merge policy files in order (built-in profiles first); later files override earlier keys."""
    merged: dict[str, dict] = {}
    limits: dict[str, dict[str, Limit]] = {}
    sources: dict[str, list[str]] = {}
    for policy, doc in policy_files:
        for dev_id, profile in policy.devices.items():
            given = profile.model_dump(exclude_unset=True)
            merged.setdefault(dev_id, {}).update(given)
            sources.setdefault(dev_id, []).append(doc.file)
            for name in LIMITS:
                if name in given:
                    value = given[name]
                    line = doc.line_of(("devices", dev_id, name))
                    if value is None:
                        limits.setdefault(dev_id, {}).pop(name, None)
                    else:
                        limits.setdefault(dev_id, {})[name] = Limit(name, float(value), doc.file, line,
                                                                       doc.builtin)
    out = {}
    for dev_id, data in merged.items():
        profile = DeviceProfile.model_validate(data)
        if not profile.target:
            file = sources[dev_id][-1]
            raise ConfigError(f"device '{dev_id}' names no target", file=file,
                              field=f"devices.{dev_id}.target",
                              fix="add 'target: onnxruntime' (or tflite, coreml, tensorrt)")
        out[dev_id] = ResolvedDevice(dev_id, profile.target, profile, limits.get(dev_id, {}),
                                     tuple(sources[dev_id]))
    return out


def policy_stack(loaded: LoadedConfig | None, override: str | Path | None = None
                 ) -> list[tuple[PolicyFile, Sourced]]:
    """Built-in profiles, then the repository's policy file, then an explicit --policy."""
    stack = builtin_profiles()
    if loaded is not None and loaded.config.policy:
        line = loaded.source.line_of(("policy",))
        from edgegate.discover.paths import safe_path

        policy_path = safe_path(loaded.root, loaded.config.policy, what="policy path",
                                field="policy", source=loaded.source.file, line=line)
        if not policy_path.is_file():
            raise ConfigError("policy file not found", file=loaded.source.file, line=line,
                              field="policy", value=loaded.config.policy,
                              fix="create the file or correct the path (relative to the repository root)")
        stack.append(load_policy(policy_path, display=loaded.config.policy))
    if override:
        stack.append(load_policy(override, display=str(override)))
    return stack
