"""Which models a run gates: the configured models changed between two commits, or explicit paths."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from edgegate.config.schema import Config, ModelSpec
from edgegate.discover.git import Change, Git

__all__ = ["Discovery", "ModelJob", "discover", "Change", "Git"]


@dataclass(frozen=True)
class ModelJob:
    path: str                   # relative to the repository root, POSIX separators
    spec: ModelSpec
    change: str                 # added | modified | renamed | explicit
    old_path: str | None = None


@dataclass(frozen=True)
class Discovery:
    jobs: list[ModelJob]
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    base: str | None = None
    head: str | None = None


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


def discover(config: Config, root: Path, git: Git | None, *, base: str | None = None,
             head: str | None = None, explicit: list[str] | None = None) -> Discovery:
    """Explicit paths are gated as given; otherwise the configured models changed base..head."""
    if explicit:
        jobs = []
        for raw in explicit:
            # paths typed on the command line are the user's own: they may lie outside the root
            real = Path(raw) if Path(raw).is_absolute() else (Path.cwd() / raw)
            real = real.resolve()
            try:
                rel = real.relative_to(root.resolve()).as_posix()
            except ValueError:
                rel = str(real)
            spec = spec_for(config, rel) or ModelSpec(path=rel)
            jobs.append(ModelJob(path=rel, spec=spec, change="explicit"))
        return Discovery(jobs=jobs)

    assert git is not None
    head_sha = git.rev(head or "HEAD")
    base_sha = git.rev(base) if base else git.default_base(config.default_branch, head_sha)
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
                jobs.setdefault(model, ModelJob(model, spec, "modified"))
            continue
        jobs.setdefault(model, ModelJob(model, spec, change.status,
                                        change.old_path if change.status == "renamed" else None))
    unchanged = []
    for path in git.files_at(head_sha):
        spec = spec_for(config, path)
        if spec is None:
            continue
        model = _model_of(spec, path)
        if model not in jobs and model not in unchanged:
            unchanged.append(model)
    return Discovery(jobs=sorted(jobs.values(), key=lambda j: j.path), removed=sorted(set(removed)),
                     unchanged=sorted(unchanged), base=base_sha, head=head_sha)


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
