"""One benchmark harness for every target: warm-up, interleaved repeats, percentiles, intervals.

Two models are timed in the same process, interleaved (A B, then B A, ...), so that drift and
noise from the rest of the machine hit both alike and the speedup is a ratio measured side by
side. Intervals are bootstrap intervals with a fixed seed, so the same timings give the same
numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

Clock = Callable[[], float]


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    ci95_ms: tuple[float, float]     # 95% interval of the median
    runs: int

    def to_dict(self) -> dict:
        return {"latency_p50_ms": self.p50_ms, "latency_p90_ms": self.p90_ms,
                "latency_mean_ms": self.mean_ms, "latency_p50_ci95_ms": list(self.ci95_ms),
                "runs": self.runs}


@dataclass(frozen=True)
class PairTiming:
    before: Timing
    after: Timing
    speedup: float                    # before p50 / after p50
    speedup_ci95: tuple[float, float]


def _timing(samples_s: np.ndarray, rng: np.random.Generator, boots: int = 1000) -> Timing:
    ms = samples_s * 1e3
    idx = rng.integers(0, len(ms), size=(boots, len(ms)))
    medians = np.median(ms[idx], axis=1)
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return Timing(float(np.median(ms)), float(np.percentile(ms, 90)), float(np.mean(ms)),
                  (float(lo), float(hi)), int(len(ms)))


def _time_once(fn: Callable[[], object], clock: Clock) -> float:
    start = clock()
    fn()
    return clock() - start


def benchmark_pair(before: Callable[[], object], after: Callable[[], object], *, warmup: int = 5,
                   repeats: int = 50, min_time_s: float = 1.0, max_time_s: float = 30.0,
                   clock: Clock = time.perf_counter, seed: int = 0) -> PairTiming:
    """Time two callables interleaved. Runs at least ``repeats`` rounds and at least
    ``min_time_s`` seconds, at most ``max_time_s`` seconds (but never fewer than 5 rounds)."""
    for _ in range(warmup):
        before()
        after()
    a, b = [], []
    started = clock()
    rounds = 0
    while True:
        if rounds % 2 == 0:
            a.append(_time_once(before, clock))
            b.append(_time_once(after, clock))
        else:
            b.append(_time_once(after, clock))
            a.append(_time_once(before, clock))
        rounds += 1
        elapsed = clock() - started
        if rounds >= 5 and elapsed >= max_time_s:
            break
        if rounds >= repeats and elapsed >= min_time_s:
            break
    rng = np.random.default_rng(seed)
    arr_a, arr_b = np.asarray(a), np.asarray(b)
    t_a, t_b = _timing(arr_a, rng), _timing(arr_b, rng)
    idx = rng.integers(0, len(arr_a), size=(1000, len(arr_a)))
    ratios = np.median(arr_a[idx], axis=1) / np.median(arr_b[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return PairTiming(t_a, t_b, float(np.median(arr_a) / np.median(arr_b)), (float(lo), float(hi)))


def benchmark_one(fn: Callable[[], object], *, warmup: int = 5, repeats: int = 50,
                  min_time_s: float = 1.0, max_time_s: float = 30.0,
                  clock: Clock = time.perf_counter, seed: int = 0) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    started = clock()
    while True:
        samples.append(_time_once(fn, clock))
        elapsed = clock() - started
        if len(samples) >= 5 and elapsed >= max_time_s:
            break
        if len(samples) >= repeats and elapsed >= min_time_s:
            break
    return _timing(np.asarray(samples), np.random.default_rng(seed))
