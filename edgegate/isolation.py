"""Each model × device compile/benchmark/evaluate runs in a child process with a timeout and a
memory cap, so a segfault, a hang or an out-of-memory in a toolchain becomes an error row.

The child is a fresh interpreter (``python -m edgegate.isolation PAYLOAD RESULT``), not a fork: no
thread pool or lock of the parent (ONNX Runtime, OpenMP, TensorFlow) is inherited half-way. The
payload is pickled arguments; the result comes back as a pickle (for ``gate_device``: the
DeviceResult as JSON). ``EDGEGATE_NO_ISOLATION=1`` runs everything in-process, for debugging.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path
from typing import Any

# Imported, not defined here: the child runs this module as __main__, and an exception class
# defined in __main__ cannot be unpickled by the parent.
from edgegate.errors import EdgeGateError, IsolationError

DEFAULT_TIMEOUT_S = 1800.0
POLL_S = 0.2


def isolation_enabled() -> bool:
    return os.environ.get("EDGEGATE_NO_ISOLATION", "").strip().lower() not in ("1", "true", "yes")


def default_memory_limit_mb() -> int:
    import psutil

    return int(psutil.virtual_memory().total * 0.75 / (1 << 20))


def run_in_child(ref: str, args: tuple, *, timeout_s: float, memory_limit_mb: int,
                 what: str, workdir: Path | None = None) -> Any:
    """Call ``module:function(*args)`` in a fresh Python process and return its result."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="edgegate-child-", dir=workdir) as tmp:
        payload, result = Path(tmp) / "payload.pkl", Path(tmp) / "result.pkl"
        payload.write_bytes(pickle.dumps((ref, args), protocol=pickle.HIGHEST_PROTOCOL))
        proc = subprocess.Popen([sys.executable, "-m", "edgegate.isolation", str(payload), str(result)],
                                stdin=subprocess.DEVNULL)
        started = time.monotonic()
        killed_for = None
        peak_mb = 0.0
        try:
            handle = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = _tree_rss(handle)
                peak_mb = max(peak_mb, rss / (1 << 20))
                if peak_mb > memory_limit_mb:
                    killed_for = (f"{what} used more than its memory cap of {memory_limit_mb} MB "
                                  f"(peak seen {peak_mb:.0f} MB) and was stopped")
                elif time.monotonic() - started > timeout_s:
                    killed_for = f"{what} did not finish within its timeout of {timeout_s:g} s"
                if killed_for:
                    _kill_tree(handle)
                    break
                time.sleep(POLL_S)
            code = proc.wait()
        except psutil.NoSuchProcess:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if killed_for:
            raise IsolationError(killed_for, fix="raise timeout_s / memory_limit_mb for this device "
                                                 "in your policy file, or make the model smaller")
        if code != 0 or not result.is_file():
            raise IsolationError(_describe_exit(code, what),
                                 fix="the toolchain crashed: see the log above; exclude this device "
                                     "for the model or report the crash upstream with the model")
        status, value = pickle.loads(result.read_bytes())
        if status == "error":
            cls, what, fields = value
            raise cls(what, **fields)
        return value


def _tree_rss(handle) -> int:
    import psutil

    total = 0
    for p in [handle, *handle.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_tree(handle) -> None:
    import psutil

    for p in [*handle.children(recursive=True), handle]:
        try:
            p.kill()
        except psutil.Error:
            pass


def _describe_exit(code: int, what: str) -> str:
    if code < 0:
        sig = signal.Signals(-code)
        why = {signal.SIGSEGV: "a segmentation fault", signal.SIGABRT: "an abort",
               signal.SIGBUS: "a bus error", signal.SIGILL: "an illegal instruction",
               signal.SIGFPE: "a floating-point exception",
               signal.SIGKILL: "SIGKILL, most likely the kernel's out-of-memory killer"}.get(sig, sig.name)
        return f"{what} crashed ({sig.name}: {why})"
    return f"{what} exited with code {code} without a result"


# ---------------------------------------------------------------------- the graph probe


def probe_model(onnx_path: Path, display: str, devices, workdir: Path | None = None) -> None:
    """Before the parent process runs a model's ONNX graph (constant folding, reference outputs),
    load it into ONNX Runtime and run it once on zeros in a child process under the tightest
    time and memory limits of the model's devices. A graph that hangs or asks for more memory
    than that becomes this model's error instead of stalling or killing the whole run. Errors
    that are not about resources are left for the stages that report them in detail."""
    if not isolation_enabled():
        return
    profiles = [d.profile for d in devices]
    timeouts = [p.timeout_s for p in profiles if getattr(p, "timeout_s", None)]
    memories = [p.memory_limit_mb for p in profiles if getattr(p, "memory_limit_mb", None)]
    timeout_s = min(timeouts) if timeouts else DEFAULT_TIMEOUT_S
    memory_mb = min(memories) if memories else default_memory_limit_mb()
    try:
        note = run_in_child("edgegate.isolation:_probe_child", (str(onnx_path), memory_mb),
                            timeout_s=timeout_s, memory_limit_mb=memory_mb,
                            what="running the model's graph once (ONNX Runtime, on zeros)",
                            workdir=workdir)
    except IsolationError as exc:
        raise IsolationError(exc.what, file=display,
                             fix="the graph needs more time or memory than its devices allow: fix "
                                 "the model, or raise timeout_s / memory_limit_mb for its devices "
                                 "in your policy file") from None
    if note:
        raise IsolationError(note, file=display,
                             fix="fix the model's shapes, or raise memory_limit_mb for its devices "
                                 "in your policy file")


_ALLOC_FAILED = ("failed to allocate", "bad_alloc", "out of memory", "cannot allocate", "memoryerror")


def _probe_child(path: str, memory_mb: int) -> str | None:
    """In the child: an address-space limit turns a runaway allocation into a clean failure."""
    import resource

    import numpy as np
    import onnxruntime as ort
    import psutil

    vms = psutil.Process().memory_info().vms
    limit = vms + (memory_mb + 256) * (1 << 20)
    with_limit = True
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    except (ValueError, OSError):
        with_limit = False
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
              "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {}
        for arg in session.get_inputs():
            if arg.type not in dtypes:
                return None           # sequences, maps, strings: left to the later stages
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in (arg.shape or [])]
            feed[arg.name] = np.zeros(shape, dtypes[arg.type])
        session.run(None, feed)
    except MemoryError:
        return _over(memory_mb, "")
    except Exception as exc:
        text = str(exc)
        if with_limit and any(k in text.lower() for k in _ALLOC_FAILED):
            return _over(memory_mb, text)
        return None
    return None


def _over(memory_mb: int, text: str) -> str:
    found = re.search(r"size (\d+)", text)
    asked = f" (one buffer of {int(found.group(1)) / (1 << 20):.0f} MB)" if found else ""
    return (f"running the model's graph once on zeros needs more memory than its cap of "
            f"{memory_mb} MB{asked}")


# ---------------------------------------------------------------------- pipeline integration


def gate_device_isolated(prepared, device, ctx, workdir):
    """pipeline.gate_device(prepared, device, ctx, workdir) in a child process; any crash
    becomes an error row."""
    from edgegate.pipeline import _error, gate_device
    from edgegate.report.model import DeviceResult

    if not isolation_enabled():
        return gate_device(prepared, device, ctx, workdir)
    name = prepared.name
    profile = device.profile
    timeout_s = getattr(profile, "timeout_s", None) or DEFAULT_TIMEOUT_S
    memory_mb = getattr(profile, "memory_limit_mb", None) or default_memory_limit_mb()
    child_ctx = dataclasses.replace(ctx, progress=None)
    child = dataclasses.replace(prepared, source=_picklable_source(prepared.source, device,
                                                                   prepared.data, workdir))
    child_args = (child, device, child_ctx, workdir, _progress_spec(ctx.progress))
    started = time.monotonic()
    try:
        text = run_in_child("edgegate.isolation:_gate_device_json", child_args, timeout_s=timeout_s,
                            memory_limit_mb=memory_mb, what=f"{device.target} for {device.id}",
                            workdir=workdir)
        return DeviceResult.model_validate_json(text)
    except Exception as exc:
        message = exc.message if isinstance(exc, EdgeGateError) else f"{type(exc).__name__}: {exc}"
        ctx.progress.warn(f"{name} → {device.id}: {message}")
        return DeviceResult(device=device.id, target=device.target, status="error",
                            reason=message[:500], error=_error(exc),
                            duration_s=round(time.monotonic() - started, 2))


class ModuleHolder:
    """Carries a source torch module to the child (the Core ML target converts from it) as a
    torch.export program file: no class of the repository is needed to load it back."""

    def __init__(self, path: Path):
        self.path = path

    @property
    def module(self):
        import torch

        return torch.export.load(str(self.path))


def _picklable_source(source, device, data, workdir: Path):
    """The SourceModel without what cannot cross a process boundary: the reference runner is
    dropped (reference outputs are computed already); for Core ML a torch source module is
    exported to a .pt2 file the child loads back (if export fails, Core ML converts from ONNX)."""
    module = getattr(source.reference, "module", None)
    holder = None
    if module is not None and device.target == "coreml" and "torch" in sys.modules:
        import torch

        path = workdir / "source-module.pt2"
        try:
            if not path.is_file():
                example = tuple(torch.from_numpy(v) for v in data.calibration.feed(0).values())
                torch.export.save(torch.export.export(module, example), str(path))
            holder = ModuleHolder(path)
        except Exception:
            holder = None
    slim = dataclasses.replace(source, reference=holder)
    try:
        pickle.dumps(slim.details)
    except Exception:
        slim = dataclasses.replace(slim, details={})
    return slim


def _progress_spec(progress) -> tuple[str, float]:
    return type(progress).__name__, getattr(progress, "started", time.monotonic())


def _gate_device_json(*args) -> str:
    from edgegate import progress as progress_mod
    from edgegate.pipeline import gate_device

    prepared, device, ctx, workdir, (kind, started) = args
    cls = getattr(progress_mod, kind, progress_mod.Progress)
    progress = cls(sys.stderr)
    progress.started = started          # one clock with the parent (CLOCK_MONOTONIC is system-wide)
    ctx = dataclasses.replace(ctx, progress=progress)
    return gate_device(prepared, device, ctx, workdir).model_dump_json()


def _child_main(payload: str, result: str) -> int:
    ref, args = pickle.loads(Path(payload).read_bytes())
    module, func = ref.split(":")
    try:
        value = ("ok", getattr(import_module(module), func)(*args))
    except EdgeGateError as exc:
        value = ("error", (type(exc), exc.what, {"file": exc.file, "line": exc.line,
                                                 "field": exc.field, "fix": exc.fix,
                                                 "value": None if exc.value is None else repr(exc.value)}))
    except Exception as exc:             # reported by the parent as an error row
        value = ("error", (IsolationError, f"{type(exc).__name__}: {str(exc)[:400]}", {}))
    except BaseException as exc:         # sys.exit() & co. from the repository's code
        from edgegate.repo_code import contained, exited_error

        if not contained(exc):
            raise
        err = exited_error(exc)
        value = ("error", (type(err), err.what, {"fix": err.fix}))
    try:
        data = pickle.dumps(value)
    except Exception as exc:
        data = pickle.dumps(("error", (IsolationError, f"unpicklable result: {exc}", {})))
    tmp = Path(result + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))
