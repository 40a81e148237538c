"""Paths from a pull request stay inside the workspace: no '..', no absolute paths, no symlinks out."""

from __future__ import annotations

from pathlib import Path

from edgegate.errors import UnsafeInputError


def inside_workspace(root: Path, raw: str | Path, *, what: str, source: str | None = None,
                     line: int | None = None) -> Path:
    """Resolve ``raw`` against ``root`` and refuse anything that lands outside it."""
    root_real = Path(root).resolve()
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    real = candidate.resolve()
    if real != root_real and root_real not in real.parents:
        raise UnsafeInputError(f"the {what} leads outside the repository", file=source or str(raw),
                               line=line,
                               value=str(raw),
                               fix="use a path inside the repository, without '..' or links out")
    return real
