"""Where EdgeGate's files live in a repository: the configuration, the committed policy, the run
outputs; and finding the configuration from a subfolder."""

from __future__ import annotations

from pathlib import Path

CONFIG = "edgegate.yml"
POLICY = ".edgegate/policy.yml"     # committed: the repository's limits (what `edgegate init` writes)
OUT_DIR = ".edgegate-out"           # run outputs (report, comment, artifacts, cache): never committed


def find_config(start: Path | None = None) -> Path | None:
    """The first edgegate.yml in ``start`` (default: the current folder) or a folder above it,
    stopping at the git repository's root (the folder holding .git): running from a subfolder
    finds the repository's configuration, never one outside the repository."""
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG
        if candidate.is_file():
            return candidate
        if (folder / ".git").exists():
            return None
    return None


def git_root(start: Path | None = None) -> Path | None:
    """The folder holding .git at or above ``start``, if any."""
    here = (start or Path.cwd()).absolute()
    return next((f for f in (here, *here.parents) if (f / ".git").exists()), None)
