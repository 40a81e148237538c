"""Optional heavy frameworks are imported only where used, through ``require``."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from edgegate.errors import DependencyError


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise a DependencyError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"'{module}' is needed here but could not be imported ({exc})",
            fix=f"pip install 'edgegate[{extra}]'",
        ) from exc


def available(module: str) -> bool:
    """True when ``module`` could be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version_of(dist: str) -> str | None:
    """The installed version of a distribution, without importing it."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
