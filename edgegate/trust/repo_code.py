"""Code the repository's configuration names: ``module:function`` references (a custom metric
``evaluation.metric``, a PyTorch ``factory``), and what that code may raise.

- ``check_reference`` says, before anything is imported, which file a reference names: a
  ``.py`` file (or a package's ``__init__.py``) under the repository root, symlinks resolved.
  Built-in, standard-library and installed modules (``sys:exit``, ``this:s``, ``json:loads``,
  ``os:system``, ``numpy:...``) are refused with a ConfigError naming the field.
- ``import_reference`` imports it from the repository root and checks that the module Python
  loaded is that file.
- ``contained`` tells which BaseException from such code is an error of the model (SystemExit,
  GeneratorExit, a KeyboardInterrupt the code raised itself) and which must still stop the run (a
  real Ctrl-C, seen by the SIGINT handler ``watch_interrupts`` installs).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edgegate.errors import ConfigError, InputError

_interrupted = False
_watching = False
_imported: set[str] = set()        # top-level names import_reference loaded from a repository


def watch_interrupts() -> None:
    """Install a SIGINT handler that records a real Ctrl-C before raising KeyboardInterrupt as
    usual. Only in the main thread (the CLI and the Action's entry point call it)."""
    global _watching
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        global _interrupted
        _interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    _watching = True


def contained(exc: BaseException) -> bool:
    """True when ``exc`` (caught around code from the pull request) is that model's error; False
    for a real interrupt of EdgeGate itself, which must propagate."""
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, KeyboardInterrupt):
        # without our handler a Ctrl-C cannot be told from a raised one: let it stop the run
        return _watching and not _interrupted
    return True          # SystemExit, GeneratorExit, other BaseException subclasses


def describe_base(exc: BaseException) -> str:
    """'SystemExit(0)' style text for an exception that is not an Exception."""
    if isinstance(exc, SystemExit):
        return f"the code called sys.exit({exc.code!r}) (SystemExit)"
    return f"the code raised {type(exc).__name__}: {exc}"


def _parse(ref: str, field: str, display: str | None) -> tuple[str, str]:
    module, sep, func = ref.partition(":")
    parts = module.split(".")
    if not sep or not func or not all(p.isidentifier() for p in parts) \
            or not all(p.isidentifier() for p in func.split(".")):
        raise ConfigError(f"'{ref}' is not a 'module:function' reference", file=display,
                          field=field, value=ref,
                          fix="name a Python file in the repository and a function in it, e.g. "
                              "'metrics:accuracy' for metrics.py")
    return module, func


def check_reference(ref: str, root: Path, *, field: str, display: str | None = None) -> Path:
    """The file under ``root`` that ``module:function`` names; nothing is imported."""
    module, _ = _parse(ref, field, display)
    parts = module.split(".")
    top = parts[0]
    fix = ("the module must be a .py file in the repository (relative to edgegate.yml), with a "
           "name no standard-library or installed module has")
    if top in sys.builtin_module_names or top in sys.stdlib_module_names:
        raise ConfigError(f"'{ref}' names the Python standard-library module '{top}', not a file in "
                          "the repository", file=display, field=field, value=ref, fix=fix)
    root_real = Path(root).resolve()
    base = root_real.joinpath(*parts)
    candidates = [base.with_name(parts[-1] + ".py"), base / "__init__.py"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(f"'{ref}': the module must be a file in the repository, and there is no "
                          f"{'/'.join(parts)}.py or {'/'.join(parts)}/__init__.py under it",
                          file=display, field=field, value=ref, fix=fix)
    real = found.resolve()
    for path in [real, *(root_real.joinpath(*parts[:i]).resolve() for i in range(1, len(parts)))]:
        if path != root_real and root_real not in path.parents:
            raise ConfigError(f"'{ref}': the module must be a file in the repository, and "
                              f"{found.relative_to(root_real)} leads outside it (a link)",
                              file=display, field=field, value=ref, fix=fix)
    cached = sys.modules.get(top)
    if cached is not None and not _inside(getattr(cached, "__file__", None), root_real):
        if top in _imported:     # ours, from another checkout (the base commit's): import afresh
            for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                del sys.modules[name]
            return real
        raise ConfigError(f"'{ref}': '{top}' is the name of a module EdgeGate has loaded already "
                          "(an installed package), not a file in the repository", file=display,
                          field=field, value=ref, fix=fix)
    return real


def _inside(file: str | None, root_real: Path) -> bool:
    if not file:
        return False
    real = Path(file).resolve()
    return root_real in real.parents


def import_reference(ref: str, root: Path, *, field: str, display: str | None = None) -> Any:
    """Check the reference, import it from the repository root, return the named attribute.
    Import errors are this field's ConfigError; a BaseException from the module is wrapped as
    one too (unless it is a real interrupt)."""
    expected = check_reference(ref, root, field=field, display=display)
    module_name, func = ref.split(":", 1)
    root_str = str(Path(root).resolve())
    sys.path.insert(0, root_str)
    try:
        _imported.add(module_name.split(".")[0])
        module = importlib.import_module(module_name)
        value: Any = module
        for name in func.split("."):
            value = getattr(value, name)
    except BaseException as exc:
        if not contained(exc):
            raise
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, Exception) else describe_base(exc)
        raise ConfigError(f"cannot import '{ref}': {what}", file=display, field=field, value=ref,
                          fix="put the module in the repository (relative to edgegate.yml) and "
                              "name a function defined in it") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(root_str)
    loaded = getattr(module, "__file__", None)
    if not loaded or Path(loaded).resolve() != expected:
        raise ConfigError(f"'{ref}' imported {loaded or 'a module with no file'}, not "
                          f"{expected}", file=display, field=field, value=ref,
                          fix="rename the module so that no installed module shadows it")
    return value


def check_spec_references(spec, root: Path, display: str | None = None) -> None:
    """A model's ``factory`` and custom ``evaluation.metric``, checked before anything loads."""
    from edgegate.config.schema import METRICS

    if spec.factory:
        check_reference(spec.factory, root, field="factory", display=display)
    metric = spec.evaluation.metric if spec.evaluation is not None else None
    if metric and metric not in METRICS:
        check_reference(metric, root, field="evaluation.metric", display=display)


def exited_error(exc: BaseException, display: str | None = None) -> InputError:
    """A SystemExit (or another BaseException) from the repository's code as the model's error:
    bad input (exit 2), never a pass and never the end of the run."""
    return InputError(f"{describe_base(exc)} while this model was gated", file=display,
                      value=None, fix="code from the repository (a model factory, a custom metric, a "
                                      "traced model) must return or raise an Exception, never exit "
                                      "the interpreter")
