"""Optional heavy frameworks are imported only where used, through ``require``."""

from __future__ import annotations

import importlib
import importlib.util
import platform
import sys
from types import ModuleType

from edgegate.errors import DependencyError

# The PyPI distribution. The import package, the CLI and the Action are `edgegate`; the PyPI name
# `edgegate` belongs to another project.
DISTRIBUTION = "edgegate-ci"


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise a DependencyError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or module).split(".")[0]
        raise DependencyError(
            f"'{module}' is needed here but could not be imported ({exc})",
            fix=install_hint(extra, [missing]) or install_hint(extra),
        ) from exc


def undeclared_here(module: str) -> bool:
    """True for a module the extras cannot declare on this platform.

    tf_keras (imported by onnx2tf) requires the `tensorflow` distribution; on Linux x86-64 the
    extras install `tensorflow-cpu` instead, so declaring tf-keras there would pull the full
    tensorflow wheel beside it. It is installed without its dependencies there.
    """
    return module == "tf_keras" and sys.platform.startswith("linux") and platform.machine() == "x86_64"


def install_hint(extra: str | None, missing: list[str] | tuple[str, ...] = ()) -> str | None:
    """The command that installs ``missing`` (the modules of ``extra``), or None."""
    parts = []
    if extra and (not missing or any(not undeclared_here(m) for m in missing)):
        parts.append(f'pip install "{DISTRIBUTION}[{extra}]"')
    if any(undeclared_here(m) for m in missing):
        tf = version_of("tensorflow-cpu") or version_of("tensorflow")
        pin = "==" + ".".join(tf.split(".")[:2]) + ".*" if tf else ""
        parts.append(f'pip install --no-deps "tf-keras{pin}"')
    return " && ".join(parts) or None


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
