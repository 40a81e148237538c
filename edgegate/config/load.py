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
        problems = _problems(model, doc, exc.errors())
        raise ConfigError(problems[0].what, file=problems[0].file, line=problems[0].line,
                          field=problems[0].field, value=problems[0].value, fix=problems[0].fix,
                          more=tuple(problems[1:])) from None


def _problems(model: type[BaseModel], doc: Sourced, errors: list[dict]) -> list[ConfigError]:
    """pydantic's errors as one ConfigError per field: union branches folded into one 'expected a
    string or a mapping', 'Value error, ' and 'Input should be' unwrapped, each with its line."""
    walked = [(_walk(model, tuple(err["loc"])), err) for err in errors]
    # a union ('str | CalibrationSpec'): when the value was the mapping and failed inside it, the
    # other branches' "expected a string" is noise: keep the errors from inside
    deeper = {clean[:u] for (clean, _, unions), _ in walked for u in unions if len(clean) > u}
    grouped: dict[tuple, list[dict]] = {}
    for (clean, _, _), err in walked:
        if clean not in deeper:
            grouped.setdefault(clean, []).append(err)
    out = []
    for loc, errs in grouped.items():
        first = errs[0]
        field_name = ".".join(str(p) for p in loc) or "(top level)"
        kinds = {e["type"] for e in errs}
        value = None if kinds & {"missing", "extra_forbidden"} else first.get("input")
        if isinstance(value, (dict, list)):
            value = type(value).__name__ if len(repr(value)) > 80 else value
        out.append(ConfigError(_explain(errs, loc), file=doc.file, line=doc.line_of(loc),
                               field=field_name, value=value, fix=_fix(errs, model, loc)))
    return sorted(out, key=lambda e: e.line or 0)


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, Any, tuple[int, ...]]:
    """Walk ``loc`` through the schema: (loc without pydantic's union-branch tags such as 'str' or
    'CalibrationSpec', the annotation reached, the lengths of the cleaned loc at each union tag).
    A dict key (a device id in a policy) is never taken for a tag."""
    import types
    import typing

    current: Any = model
    out: list = []
    unions: list[int] = []
    for part in loc:
        tp = current
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            if len(args) > 1:
                tagged = [a for a in args if getattr(a, "__name__", None) == part or str(a) == part]
                if tagged or not isinstance(part, str) or part not in _fields_of(args):
                    unions.append(len(out))
                    current = tagged[0] if tagged else Any
                    continue
                tp = next(a for a in args if isinstance(a, type) and issubclass(a, BaseModel))
            else:
                tp = args[0]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        out.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            current = info.annotation if info is not None else Any
        elif origin is dict and args:
            current = args[-1]
        elif origin in (list, tuple) and args:
            current = args[0]
        else:
            current = Any
    return tuple(out), current, tuple(unions)


def _fields_of(types_: list) -> set[str]:
    return {f for t in types_ if isinstance(t, type) and issubclass(t, BaseModel) for f in t.model_fields}


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The schema model a (cleaned) loc points into: the mapping whose keys are allowed there."""
    import types
    import typing

    _, tp, _ = _walk(model, tuple(loc))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next((a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)),
                  None)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


_EXPECTED = {"string_type": "a string", "model_type": "a mapping", "dict_type": "a mapping",
             "model_attributes_type": "a mapping", "int_type": "an integer",
             "int_parsing": "an integer", "int_from_float": "an integer", "float_type": "a number",
             "float_parsing": "a number", "bool_type": "true or false",
             "bool_parsing": "true or false", "list_type": "a list", "tuple_type": "a list",
             "literal_error": None}


def _explain(errs: list[dict], loc: tuple) -> str:
    kinds = [e["type"] for e in errs]
    if "extra_forbidden" in kinds:
        return f"unknown key '{loc[-1]}'" if loc else "unknown key"
    if "missing" in kinds:
        return "required key is missing"
    if len(errs) > 1 and all(k in _EXPECTED for k in kinds):
        wanted = []
        for e in errs:
            text = _EXPECTED[e["type"]] or _should(e["msg"])
            if text not in wanted:
                wanted.append(text)
        return "expected " + " or ".join(wanted)
    err = errs[0]
    if err["type"] in _EXPECTED and _EXPECTED[err["type"]]:
        return "expected " + _EXPECTED[err["type"]]
    return _should(err["msg"])


def _should(msg: str) -> str:
    """pydantic's wording without its prefixes: 'Value error, x' -> 'x', 'Input should be x' ->
    'must be x'."""
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("Input should be "):
        msg = "must be " + msg.removeprefix("Input should be ")
    return msg


def _fix(errs: list[dict], model: type[BaseModel], loc: tuple) -> str:
    import difflib

    err = errs[0]
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        if parent is not None:
            allowed = list(parent.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            return hint + "allowed keys here: " + ", ".join(allowed)
        return "remove the key"
    if err["type"] == "missing":
        return f"add '{loc[-1]}'"
    choices = _choices(model, loc)
    if choices and isinstance(err.get("input"), str):
        close = difflib.get_close_matches(err["input"], choices, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return hint + "use one of: " + ", ".join(choices)
    page = "docs/policies.md" if model is PolicyFile else "docs/configuration.md"
    what = _explain(errs, loc)
    if what.startswith("expected "):
        return f"write '{loc[-1]}' as {what.removeprefix('expected ')} ({page})" if loc else page
    return f"correct '{loc[-1]}' ({page})" if loc else f"see {page}"


def _choices(model: type[BaseModel], loc: tuple) -> list[str]:
    """The allowed values of a Literal field, or the metric names, for a did-you-mean."""
    import typing

    from edgegate.config.schema import METRICS

    if not loc:
        return []
    if loc[-1] == "metric":
        return [*METRICS, "module:function"]
    parent = _model_at(model, loc[:-1])
    info = parent.model_fields.get(str(loc[-1])) if parent is not None else None
    if info is None:
        return []
    tp = info.annotation
    for arg in (tp, *typing.get_args(tp)):
        if typing.get_origin(arg) is typing.Literal:
            return [str(v) for v in typing.get_args(arg)]
    return []


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    source: Sourced
    root: Path


def load_config(path: str | Path, root: str | Path | None = None) -> LoadedConfig:
    """edgegate.yml; the repository root is its folder (as named: a link to a file elsewhere is
    refused by the path guard, never followed to make 'elsewhere' the root)."""
    from edgegate.trust.paths import safe_path

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
        from edgegate.trust.paths import safe_path

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
