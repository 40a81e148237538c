"""Energy per inference on a device runner (``edgegate measure``), from the power source the
board exposes; where there is none, the reason, never a number.

Sources, tried in this order unless one is named (``--power``):

- ``tegrastats`` (NVIDIA Jetson): the board-input rail sampled every 100 ms and integrated over
  the window. Rails by release: L4T 32.x Nano/TX2 ``POM_5V_IN 2532/2698`` (mW, no unit),
  Xavier NX ``VDD_IN 4872/4872``; L4T 35.x/36.x Orin ``VDD_IN 4915mW/4915mW`` (36.x lines start
  with a date; newer ones add a third, peak value ``mW/mW/mW``). The first value is the
  instantaneous power. Boards without a board-input rail (AGX Orin: ``VDD_GPU_SOC``,
  ``VDD_CPU_CV``, ``VIN_SYS_5V0``) need the rail named: ``tegrastats:RAIL[+RAIL...]``.
- ``rapl`` (Linux powercap, Intel/AMD): the package zones' cumulative ``energy_uj`` read before
  and after the window, a counter that wrapped counted through ``max_energy_range_uj``.
- ``command:CMD`` (a USB power meter, a smart plug): CMD is run every 100 ms and prints the
  instantaneous power in mW as its last number.

The energy is the board's (or the package's) during the window divided by the inferences run in
it: idle power included, so it is what the battery pays per inference at that rate.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
SAMPLE_S = 0.1
WINDOW_S = 3.0              # at least 30 samples of a 100 ms source
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")     # the board's input, where the board has one
_RAIL = re.compile(r"\b((?:POM|VDD|VIN)_[A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?")


class NoPowerSource(Exception):
    """No power source here: the message says which were looked for and why each is missing."""


def tegrastats_rails(line: str) -> dict[str, float]:
    """The rails of one tegrastats line, instantaneous mW (the first of cur/avg[/peak])."""
    return {name: float(cur) for name, cur, *_ in _RAIL.findall(line)}


def tegrastats_power_mw(line: str, rails: tuple[str, ...] | None = None) -> float | None:
    """The board's power in one tegrastats line: the named rails summed, else the board-input
    rail; None when the line has none of them."""
    got = tegrastats_rails(line)
    if rails:
        return sum(got[r] for r in rails) if all(r in got for r in rails) else None
    return next((got[r] for r in TOTAL_RAILS if r in got), None)


def rapl_zones(root: Path = POWERCAP) -> list[Path]:
    """The package zones (``intel-rapl:N``, not their subzones, which they already contain)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if re.fullmatch(r"(intel|amd)-rapl:\d+", p.name))


def energy_delta_uj(before: int, after: int, max_range_uj: int) -> int:
    """A cumulative counter's increase, through one wrap-around at ``max_range_uj``."""
    return after - before if after >= before else after + (max_range_uj - before) + 1


@dataclass
class Energy:
    source: str
    energy_mj: float
    seconds: float
    samples: int

    @property
    def mean_power_mw(self) -> float:
        return self.energy_mj / self.seconds if self.seconds > 0 else float("nan")


class Rapl:
    def __init__(self, root: Path = POWERCAP):
        self.zones = rapl_zones(root)
        if not self.zones:
            raise NoPowerSource(f"rapl: no {root}/intel-rapl:N or amd-rapl:N zone")
        try:
            self._read()
        except OSError as exc:
            raise NoPowerSource(f"rapl: {exc.filename} is not readable ({exc.strerror}); it is "
                                "root-only on kernels since 5.10") from None
        self.name = "rapl (" + ", ".join(
            _text(z / "name") or z.name for z in self.zones) + ": energy_uj)"

    def _read(self) -> list[int]:
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def start(self) -> None:
        self._t0, self._e0 = time.perf_counter(), self._read()

    def stop(self) -> Energy:
        e1, t1 = self._read(), time.perf_counter()
        total = sum(energy_delta_uj(a, b, int((z / "max_energy_range_uj").read_text()))
                    for z, a, b in zip(self.zones, self._e0, e1))
        return Energy(self.name, total / 1e3, t1 - self._t0, 2)


class Sampled:
    """A power reading (mW) taken every ``SAMPLE_S`` and integrated (trapezoids) over the window."""

    def __init__(self, name: str):
        self.name = name
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _add(self, mw: float | None) -> None:
        if mw is not None:
            self._samples.append((time.perf_counter(), mw))

    def start(self) -> None:
        self._samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> Energy:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        s = self._samples
        if len(s) < 2:
            seen = getattr(self, "rails_seen", None)
            raise NoPowerSource(f"{self.name}: {len(s)} power sample(s) in the window: no energy"
                                + (f" (rails in its output: {', '.join(seen)}; name the board's "
                                   "input with --power tegrastats:RAIL+RAIL)" if seen else ""))
        mj = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(s, s[1:]))
        return Energy(self.name, mj, s[-1][0] - s[0][0], len(s))

    def _run(self) -> None:
        raise NotImplementedError


class Tegrastats(Sampled):
    def __init__(self, rails: tuple[str, ...] | None = None):
        exe = shutil.which("tegrastats")
        if exe is None:
            raise NoPowerSource("tegrastats: not on PATH (not a Jetson)")
        self.rails, self.exe = rails, exe
        super().__init__("tegrastats " + ("+".join(rails) if rails else "/".join(TOTAL_RAILS)))

    def _run(self) -> None:
        proc = subprocess.Popen([self.exe, "--interval", str(int(SAMPLE_S * 1000))],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                mw = tegrastats_power_mw(line, self.rails)
                if mw is None and not self._samples:
                    self.rails_seen = sorted(tegrastats_rails(line))
                self._add(mw)
                if self._stop.is_set():
                    break
        finally:
            proc.terminate()
            proc.wait(timeout=5)


class Command(Sampled):
    def __init__(self, command: str):
        self.argv = shlex.split(command)
        if not self.argv or shutil.which(self.argv[0]) is None:
            raise NoPowerSource(f"command: '{command}' is not an executable here")
        super().__init__(f"command '{command}' (mW)")

    def read_mw(self) -> float | None:
        out = subprocess.run(self.argv, capture_output=True, text=True, timeout=5).stdout
        numbers = re.findall(r"-?\d+(?:\.\d+)?", out)
        return float(numbers[-1]) if numbers else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._add(self.read_mw())
            except (OSError, subprocess.SubprocessError):
                pass
            self._stop.wait(SAMPLE_S)


def open_source(spec: str | None = None, powercap: Path = POWERCAP):
    """The power source ``spec`` names (tegrastats[:RAIL+RAIL], rapl, command:CMD), or the first
    available; NoPowerSource with every reason when there is none."""
    if spec:
        kind, _, arg = spec.partition(":")
        if kind == "tegrastats":
            return Tegrastats(tuple(arg.split("+")) if arg else None)
        if kind == "rapl":
            return Rapl(powercap)
        if kind == "command" and arg:
            return Command(arg)
        raise NoPowerSource(f"unknown power source '{spec}': use tegrastats[:RAIL+RAIL], rapl "
                            "or command:CMD")
    reasons = []
    for make in (Tegrastats, lambda: Rapl(powercap)):
        try:
            return make()
        except NoPowerSource as exc:
            reasons.append(str(exc))
    raise NoPowerSource("; ".join(reasons) + "; no --power command given")


def energy_per_inference(source, infer, window_s: float = WINDOW_S, min_runs: int = 10) -> dict:
    """Run ``infer`` back to back for ``window_s`` (and ``min_runs``) while ``source`` measures:
    the metrics (``energy_mj_per_inference``, ``power_mw_mean``) and the record of how."""
    source.start()
    started, runs = time.perf_counter(), 0
    try:
        while runs < min_runs or time.perf_counter() - started < window_s:
            infer()
            runs += 1
    finally:
        energy = source.stop()
    return {"energy_mj_per_inference": energy.energy_mj / runs,
            "power_mw_mean": energy.mean_power_mw,
            "record": {"source": energy.source, "inferences": runs,
                       "window_s": round(energy.seconds, 3), "samples": energy.samples,
                       "energy_mj": round(energy.energy_mj, 3),
                       "what": "the board's (RAPL: the CPU package's) energy during back-to-back "
                               "inferences of the artifact alone, idle power included, / inferences"}}


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
