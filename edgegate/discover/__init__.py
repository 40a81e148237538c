"""Which models a run gates: the configured models changed between two commits, or explicit paths."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgegate.config.schema import Config, ModelSpec
from edgegate.discover.git import Change, Git
from edgegate.discover.why import FIRST_COMMIT, data_reasons, entry_reasons

__all__ = ["Discovery", "ModelJob", "discover", "Change", "Git"]


@dataclass(frozen=True)
class ModelJob:
    path: str                   # relative to the repository root, POSIX separators
    spec: ModelSpec
    change: str                 # added | modified | renamed | explicit | regated (file unchanged)
    old_path: str | None = None
    why: tuple[str, ...] = ()   # what changed that decides its result (shown in the report)


@dataclass(frozen=True)
class Discovery:
    jobs: list[ModelJob]
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    base: str | None = None
    head: str | None = None

    def regate(self, reasons: dict[str, list[str]], config: Config) -> "Discovery":
        """Move unchanged models into the jobs, with why (``reasons``: model path -> why)."""
        moved = [m for m in self.unchanged if reasons.get(m)]
        if not moved:
            return self
        jobs = list(self.jobs)
        for model in moved:
            spec = spec_for(config, model)
            if spec is not None:
                jobs.append(ModelJob(model, spec, "regated", why=tuple(reasons[model])))
        return replace(self, jobs=sorted(jobs, key=lambda j: j.path),
                       unchanged=[m for m in self.unchanged if m not in moved])


def _matches(spec: ModelSpec, path: str) -> bool:
    pattern = spec.path.strip("/")
    if path == pattern or fnmatch.fnmatchcase(path, pattern):
        return True
    # a SavedModel folder (or any model folder): a change to a file inside it changes the model
    return path.startswith(pattern.rstrip("/") + "/")


def _model_of(spec: ModelSpec, path: str) -> str:
    pattern = spec.path.strip("/")
    if path.startswith(pattern + "/") and not any(c in pattern for c in "*?["):
        return pattern
    return path


def spec_for(config: Config, path: str) -> ModelSpec | None:
    """The entry for a file: one naming it exactly wins over globs and folders (so a per-model
    entry can follow a catch-all 'models/*.onnx'); otherwise the first entry that matches."""
    matching = [spec for spec in config.models if _matches(spec, path)]
    exact = [spec for spec in matching if spec.path.strip("/") == path]
    return (exact or matching or [None])[0]


def _why_changed(change: Change) -> str:
    if change.status == "renamed":
        return f"renamed from {change.old_path}"
    return {"added": "model file added", "deleted": "model file changed"}.get(
        change.status, "model file changed")


def base_config_at(git: Git, base: str, config_file: str) -> tuple[Config | None, str | None]:
    """The base commit's edgegate.yml (None if absent or invalid there, with why)."""
    from edgegate.config.load import _validate
    from edgegate.config.yamlfile import load_yaml_text
    from edgegate.errors import ConfigError

    text = git.show(base, config_file)
    if text is None:
        return None, None
    try:
        return _validate(Config, load_yaml_text(text, f"{config_file}@{base[:7]}")), None
    except ConfigError as exc:
        return None, f"the base commit's {config_file} is invalid ({exc.message})"


def discover(config: Config, root: Path, git: Git | None, *, base: str | None = None,
             head: str | None = None, explicit: list[str] | None = None,
             config_file: str | None = None) -> Discovery:
    """Explicit paths are gated as given; otherwise the configured models for which anything
    that decides their result changed base..head: the model file, its data files and code
    (always), its edgegate.yml entry (when ``config_file`` names the configuration, read at the
    base commit too). Without a base commit (the first commit) every configured model is gated.
    Policy changes are added by the caller (``Discovery.regate``), which resolves the limits."""
    if explicit:
        jobs = []
        for raw in explicit:
            # as typed (links not followed here): pipeline.guarded_model_path resolves it and
            # refuses a path, or a link, that leads outside the repository
            real = Path(os.path.abspath(raw))
            rel = str(real)
            for base in (Path(os.path.abspath(root)), root.resolve()):
                try:
                    rel = real.relative_to(base).as_posix()
                    break
                except ValueError:
                    continue
            spec = spec_for(config, rel) or ModelSpec(path=rel)
            jobs.append(ModelJob(path=rel, spec=spec, change="explicit",
                                 why=("named on the command line",)))
        return Discovery(jobs=jobs)

    assert git is not None
    head_sha = git.rev(head or "HEAD")
    base_sha = git.rev(base) if base else git.default_base(config.default_branch, head_sha)
    if base_sha is None:
        every = [ModelJob(m, spec_for(config, m), "added", why=(FIRST_COMMIT,))  # type: ignore[arg-type]
                 for m in configured_models(config, git, head_sha)]
        return Discovery(jobs=every, base=None, head=head_sha)
    changes = git.changes(base_sha, head_sha)
    jobs: dict[str, ModelJob] = {}
    removed: list[str] = []
    for change in changes:
        spec = spec_for(config, change.path) or (spec_for(config, change.old_path)
                                                  if change.old_path else None)
        if spec is None:
            continue
        model = _model_of(spec, change.path)
        if change.status == "deleted":
            if model == change.path or not (root / model).exists():
                removed.append(model)
            else:
                jobs.setdefault(model, ModelJob(model, spec, "modified", why=(_why_changed(change),)))
            continue
        jobs.setdefault(model, ModelJob(model, spec, change.status,
                                        change.old_path if change.status == "renamed" else None,
                                        why=(_why_changed(change),)))
    unchanged = []
    for path in git.files_at(head_sha):
        spec = spec_for(config, path)
        if spec is None:
            continue
        model = _model_of(spec, path)
        if model not in jobs and model not in unchanged:
            unchanged.append(model)
    found = Discovery(jobs=sorted(jobs.values(), key=lambda j: j.path), removed=sorted(set(removed)),
                      unchanged=sorted(unchanged), base=base_sha, head=head_sha)
    changed = [c.path for c in changes] + [c.old_path for c in changes if c.old_path]
    base_cfg, invalid = (base_config_at(git, base_sha, config_file) if config_file else (config, None))

    def reasons_for(model: str, spec: ModelSpec, old_path: str | None = None) -> list[str]:
        why = data_reasons(spec, changed)
        if invalid:
            why.append(invalid)
        elif config_file:
            old_spec = spec_for(base_cfg, old_path or model) if base_cfg is not None else None
            why += entry_reasons(base_cfg, config, old_spec, spec)
        return why

    found = replace(found, jobs=[replace(j, why=j.why + tuple(reasons_for(j.path, j.spec, j.old_path)))
                                 for j in found.jobs])
    reasons = {}
    for model in found.unchanged:
        spec = spec_for(config, model)
        if spec is not None:
            reasons[model] = reasons_for(model, spec)
    return found.regate(reasons, config)


def configured_models(config: Config, git: Git, ref: str = "HEAD") -> list[str]:
    """Every configured model present at ``ref`` (for a release, which gates them all)."""
    models: list[str] = []
    for path in git.files_at(git.rev(ref)):
        spec = spec_for(config, path)
        if spec is not None:
            model = _model_of(spec, path)
            if model not in models:
                models.append(model)
    return sorted(models)
