"""Peak memory and cold load time of one model, each model in a fresh process.

A fresh Python interpreter (``isolation.run_in_child``: its timeout and memory cap, a crash
becomes an error) imports the target's runtime, takes its resident memory as the baseline,
loads the model with the target's runner (timed: the cold load), runs it ``runs`` times on one
evaluation feed, and reports the RSS high-water mark above the baseline. The runtime's own
import is not the model's memory: it is recorded beside (``runtime_import_mb``), not counted.

On Linux the kernel keeps the high-water mark itself (``VmHWM`` in /proc/self/status), reset to
the current RSS after the imports by writing 5 to /proc/self/clear_refs, so a peak between two
samples is never missed. Where that is not possible (macOS, a locked-down /proc) a thread samples
the RSS every millisecond, and the record says which method was used.

"Cold" means a fresh process: the model's file may still be in the operating system's page cache.

One run measures each (runtime, model file content, threads, input binding, feed, runs) once
(``Footprints``, held by the run): the FP32 model gated on several devices of one runtime, or a
base artifact measured when the base was gated in the same run, is not loaded again. Nothing is
kept across runs: a number in a report is always measured by the run that wrote it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

MB = 1e6                    # 1 MB = 1,000,000 bytes, as max_size_mb
MEMORY_RUNS = 10            # inferences after the load (arenas grow on the first ones)
DEFAULT_TIMEOUT_S = 600.0
KERNEL_HWM = "kernel RSS high-water mark (VmHWM, reset after the imports)"
SAMPLED = "RSS sampled every 1 ms (no resettable kernel high-water mark here)"


@dataclass(frozen=True)
class Loadable:
    """What a fresh process needs to load a model with a target's runner."""

    target: str
    path: Path
    threads: int | None
    display: str
    binding: dict | None = None
    timeout_s: float | None = None
    memory_limit_mb: int | None = None


def footprint(model: Loadable, feed: dict, runs: int = MEMORY_RUNS,
              workdir: Path | None = None) -> dict:
    """Load ``model`` in a fresh process and run it ``runs`` times on ``feed``: the record
    (``peak_memory_mb``, ``load_time_ms``, the baseline, the method). Raises IsolationError (the
    child crashed, hung or went over its cap) or the runner's own error."""
    from edgegate.trust.isolation import default_memory_limit_mb, run_in_child, sandbox_reading

    return run_in_child("edgegate.stages.memory:_child",
                        # absolute: the child's cwd is a folder of its own
                        (model.target, str(Path(model.path).resolve()), model.threads, model.display,
                         model.binding, feed, runs),
                        timeout_s=model.timeout_s or DEFAULT_TIMEOUT_S,
                        memory_limit_mb=model.memory_limit_mb or default_memory_limit_mb(),
                        what=f"the memory measurement of {Path(model.path).name}", workdir=workdir,
                        sandbox=sandbox_reading(Path(model.path), workdir))


class Footprints:
    """One run's fresh-process measurements, each taken once and reused (``footprint`` with a
    cache). With ``folder`` the records are files there, so the child process that gates each
    device (isolation.gate_device_isolated) shares them; the run removes the folder at its end
    (``close``). A measurement that failed is not kept: another device may give it a larger cap."""

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._done: dict[str, dict] = {}
        self.measured = 0              # in this process
        self.reused = 0

    @classmethod
    def for_run(cls, parent: Path) -> "Footprints":
        """Records in a folder under ``parent`` (the run's work folder: the sandboxed per-device
        children may write there, and nowhere else outside their own folder)."""
        import tempfile

        parent.mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix="footprints-", dir=parent)).resolve())

    def close(self) -> None:
        import shutil

        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    @staticmethod
    def key(model: Loadable, feed: dict, runs: int) -> str:
        import hashlib
        import json

        import numpy as np

        from edgegate.gate.model import sha256_of

        inputs = []
        for name in sorted(feed):
            arr = np.ascontiguousarray(feed[name])
            inputs.append([name, list(arr.shape), str(arr.dtype),
                           hashlib.sha256(arr.tobytes()).hexdigest()])
        key = [model.target, sha256_of(Path(model.path)), model.threads, model.binding, inputs, runs]
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    def _get(self, key: str) -> dict | None:
        import json

        if key in self._done or self.folder is None:
            return self._done.get(key)
        try:
            return json.loads((self.folder / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None

    def _put(self, key: str, record: dict) -> None:
        import json
        import os

        self._done[key] = dict(record)
        if self.folder is not None and self.folder.is_dir():
            tmp = self.folder / f"{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.folder / f"{key}.json")

    def footprint(self, model: Loadable, feed: dict, runs: int = MEMORY_RUNS,
                  workdir: Path | None = None) -> dict:
        """``footprint(model, feed)``, or the record this run already took of the same thing
        (then marked ``reused_in_run``)."""
        key = self.key(model, feed, runs)
        got = self._get(key)
        if got is not None:
            self.reused += 1
            return {**got, "reused_in_run": True}
        got = footprint(model, feed, runs, workdir)
        self.measured += 1
        self._put(key, got)
        return got


# ---------------------------------------------------------------------- in the child


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024          # the kernel's "kB" is KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


class HighWater:
    """The process's RSS high-water mark from ``start()`` on."""

    def __init__(self):
        self.method = SAMPLED
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        """Reset the mark; returns the baseline RSS in bytes."""
        if self._reset_kernel_mark():
            self.method = KERNEL_HWM
            return _status_bytes("VmRSS") or 0
        import psutil

        proc = psutil.Process()
        baseline = proc.memory_info().rss
        self._peak = baseline

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, proc.memory_info().rss)
                self._stop.wait(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return baseline

    def peak(self) -> int:
        if self.method == KERNEL_HWM:
            return _status_bytes("VmHWM") or 0
        import psutil

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return max(self._peak, psutil.Process().memory_info().rss)

    @staticmethod
    def _reset_kernel_mark() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            return False
        hwm, rss = _status_bytes("VmHWM"), _status_bytes("VmRSS")
        # the reset took if the mark is back at (about) the current RSS
        return hwm is not None and rss is not None and hwm <= rss + (1 << 20)


def _import_runtime(ref: str | None, extra: str | None) -> None:
    if not ref:
        return
    from edgegate._deps import require

    module, _, func = ref.partition(":")
    loaded = require(module, extra=extra or "all")
    if func:
        getattr(loaded, func)()


def _child(target: str, path: str, threads: int | None, display: str, binding: dict | None,
           feed: dict, runs: int) -> dict:
    import gc

    from edgegate.targets import TARGETS, load_target
    from edgegate.targets.base import host_machine

    impl = load_target(target)
    gc.collect()
    before_import = _status_bytes("VmRSS")
    _import_runtime(TARGETS[target].runtime, TARGETS[target].extra)
    gc.collect()
    mark = HighWater()
    baseline = mark.start()
    started = time.perf_counter()
    runner = impl.runner(Path(path), threads, display, binding)
    load_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    runner.infer(feed)
    first_ms = (time.perf_counter() - started) * 1e3
    for _ in range(max(0, runs - 1)):
        runner.infer(feed)
    peak = mark.peak()
    return {"peak_memory_mb": (peak - baseline) / MB, "load_time_ms": load_ms,
            "first_inference_ms": first_ms, "baseline_rss_mb": baseline / MB,
            "peak_rss_mb": peak / MB,
            "runtime_import_mb": (baseline - before_import) / MB if before_import else None,
            "inferences": max(1, runs), "method": mark.method,
            "machine": host_machine()}
