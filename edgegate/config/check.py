"""Checks of edgegate.yml against the repository and the known devices, made before anything is
gated: a model 'path' that matches no file and a device id no policy defines are configuration
errors (exit 2) naming file:line and field, with the valid choices and a did-you-mean. Nothing a
typo disables passes silently."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from pathlib import Path

from edgegate.config.load import LoadedConfig
from edgegate.errors import ConfigError

GLOB_CHARS = "*?["


def _did_you_mean(value: str, choices: Iterable[str]) -> str:
    """The closest choice (difflib), else the one choice that holds the value's characters in
    order (an abbreviation: 'rpi4' -> 'raspberry-pi-4'); nothing when that is ambiguous."""
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
    if not close:
        close = [c for c in choices if _abbreviates(value.lower(), c.lower())]
    return f"did you mean '{close[0]}'? " if len(close) == 1 else ""


def _abbreviates(short: str, long: str) -> bool:
    rest = iter(long)
    return len(short) >= 3 and all(ch in rest for ch in short)


def check_devices(loaded: LoadedConfig, known: Iterable[str], requested: list[str] | None = None) -> None:
    """Every device named in edgegate.yml (top-level 'devices', each model's 'devices') and on the
    command line (--device, the Action's 'devices' input) must be defined by a policy file."""
    known = sorted(known)
    valid = ("valid ids: " + ", ".join(known) +
             "; or define the device under 'devices:' in your policy file")
    config, source = loaded.config, loaded.source
    named: list[tuple[str, tuple, str | None]] = []
    named += [(d, ("devices", i), source.file) for i, d in enumerate(config.devices)]
    for m, spec in enumerate(config.models):
        named += [(d, ("models", m, "devices", i), source.file) for i, d in enumerate(spec.devices or [])]
    for device, loc, file in named:
        if device not in known:
            raise ConfigError(f"unknown device '{device}'", file=file,
                              line=source.line_of(loc) if source.data is not None else None,
                              field=".".join(map(str, loc)), value=device,
                              fix=_did_you_mean(device, known) + valid)
    for device in requested or []:
        if device not in known:
            raise ConfigError(f"unknown device '{device}' (given on the command line or in the "
                              "Action's 'devices' input)", field="--device",
                              fix=_did_you_mean(device, known) + valid)


def check_paths(loaded: LoadedConfig, list_files: Callable[[], list[str]]) -> None:
    """Every model entry's 'path' (a file, a folder or a glob) must match something in the
    working tree. ``list_files``: the repository's files, POSIX paths relative to its root
    (called only if a glob or a missing path needs them)."""
    root: Path = loaded.root
    listed: list[str] | None = None

    def files() -> list[str]:
        nonlocal listed
        if listed is None:
            listed = list_files()
        return listed

    for i, spec in enumerate(loaded.config.models):
        pattern = spec.path.strip("/").removeprefix("./")
        if not any(c in pattern for c in GLOB_CHARS):
            if (root / pattern).exists():
                continue
        elif any(fnmatch.fnmatchcase(f, pattern) or f.startswith(pattern.rstrip("/") + "/")
                 for f in files()):
            continue
        loc = ("models", i, "path")
        candidates = [f for f in files() if not f.startswith(".")]
        hint = _did_you_mean(pattern, candidates)
        raise ConfigError("'path' matches no file in the repository", file=loaded.source.file,
                          line=loaded.source.line_of(loc), field=".".join(map(str, loc)),
                          value=spec.path,
                          fix=hint + "correct the path or glob (relative to the repository root; "
                                     "'*' also matches '/'), commit the model, or remove the entry")


def repository_files(root: Path, git=None) -> list[str]:
    """The working tree's files: git's tracked and untracked (not ignored) ones, else a walk."""
    if git is not None and git.is_repo():
        return git.worktree_files()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(root).parts)
