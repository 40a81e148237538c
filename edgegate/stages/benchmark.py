"""One benchmark harness for every target: warm-up, interleaved repeats, percentiles, intervals.

Two models are timed in the same process, interleaved (A B, then B A, ...), so that drift and
noise from the rest of the machine hit both alike and the speedup is a ratio measured side by
side. Intervals are block-bootstrap intervals with a fixed seed, so the same timings give the
same numbers: consecutive rounds are resampled in contiguous blocks (BLOCKS per measurement),
because noise on a shared machine is correlated in time (a burst of load slows many rounds in a
row). Resampling single rounds would treat a burst as many independent observations and give a
narrow interval around a skewed value; resampling blocks makes a burst widen the interval.

The 99th percentile is given only from P99_MIN_RUNS timed runs on (below that the slowest 1 %
is not even one run, and "p99" would be the maximum); throughput is batch-1 inferences per second
of time spent in them (1000 / mean latency in ms), with the bootstrap interval of the mean.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

Clock = Callable[[], float]

P99_MIN_RUNS = 100


def p99_gap(runs: int) -> str:
    """Why there is no p99 for ``runs`` timed runs (report.json's not_measured)."""
    return (f"{runs} timed runs: a 99th percentile needs at least {P99_MIN_RUNS} (raise "
            "benchmark.repeats or benchmark.min_time_s)")


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p90_ms: float
    mean_ms: float
    ci95_ms: tuple[float, float]     # 95% interval of the median
    runs: int
    p99_ms: float | None = None      # None: fewer than P99_MIN_RUNS runs
    p99_ci95_ms: tuple[float, float] | None = None
    mean_ci95_ms: tuple[float, float] | None = None

    @property
    def throughput_ips(self) -> float:
        """Batch-1 inferences per second of time spent in them."""
        return 1000.0 / self.mean_ms

    @property
    def throughput_ci95_ips(self) -> tuple[float, float] | None:
        if self.mean_ci95_ms is None:
            return None
        return (1000.0 / self.mean_ci95_ms[1], 1000.0 / self.mean_ci95_ms[0])

    def to_dict(self) -> dict:
        return {"latency_p50_ms": self.p50_ms, "latency_p90_ms": self.p90_ms,
                "latency_mean_ms": self.mean_ms, "latency_p50_ci95_ms": list(self.ci95_ms),
                "latency_p99_ms": self.p99_ms,
                "latency_p99_ci95_ms": list(self.p99_ci95_ms) if self.p99_ci95_ms else None,
                "throughput_ips": self.throughput_ips, "runs": self.runs}

    def metrics(self) -> dict:
        """The report's tail-latency and throughput fields (report.model.Metrics) of the artifact."""
        return dict(latency_p99_ms=self.p99_ms,
                    latency_p99_ci95_ms=list(self.p99_ci95_ms) if self.p99_ci95_ms else None,
                    throughput_ips=self.throughput_ips,
                    throughput_ci95_ips=list(self.throughput_ci95_ips)
                    if self.throughput_ci95_ips else None)


@dataclass(frozen=True)
class PairTiming:
    before: Timing
    after: Timing
    speedup: float                    # before p50 / after p50
    speedup_ci95: tuple[float, float]
    samples_s: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())   # raw, in interleaved order

    def metrics(self) -> dict:
        """The report's latency fields (report.model.Metrics) for FP32 before, artifact after."""
        return dict(latency_p50_ms_before=self.before.p50_ms, latency_p50_ms_after=self.after.p50_ms,
                    latency_p90_ms_before=self.before.p90_ms, latency_p90_ms_after=self.after.p90_ms,
                    latency_p50_ci95_ms_before=list(self.before.ci95_ms),
                    latency_p50_ci95_ms_after=list(self.after.ci95_ms), latency_runs=self.after.runs,
                    speedup=self.speedup, speedup_ci95=list(self.speedup_ci95),
                    latency_p99_ms_fp32=self.before.p99_ms, throughput_ips_fp32=self.before.throughput_ips,
                    **self.after.metrics())


BLOCKS = 10
BOOTS = 1000


def block_resamples(n: int, rng: np.random.Generator, boots: int = BOOTS,
                    blocks: int = BLOCKS) -> np.ndarray:
    """(boots, n) indices: each row is ``blocks`` contiguous runs of rounds drawn with
    replacement (non-overlapping block bootstrap), cut to n."""
    size = max(1, -(-n // blocks))
    starts = np.arange(0, n, size)
    picked = starts[rng.integers(0, len(starts), size=(boots, len(starts)))]
    idx = (picked[:, :, None] + np.arange(size)[None, None, :]).reshape(boots, -1)
    idx = np.where(idx < n, idx, idx - size)          # the last block may be short: wrap inside it
    return np.clip(idx, 0, n - 1)[:, :n]


def _interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def _timing(samples_s: np.ndarray, idx: np.ndarray) -> Timing:
    ms = samples_s * 1e3
    resampled = ms[idx]
    p99 = p99_ci = None
    if len(ms) >= P99_MIN_RUNS:
        p99 = float(np.percentile(ms, 99))
        p99_ci = _interval(np.percentile(resampled, 99, axis=1))
    return Timing(float(np.median(ms)), float(np.percentile(ms, 90)), float(np.mean(ms)),
                  _interval(np.median(resampled, axis=1)), int(len(ms)), p99, p99_ci,
                  _interval(np.mean(resampled, axis=1)))


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
    return _pair(np.asarray(a), np.asarray(b), seed)


def _pair(arr_a: np.ndarray, arr_b: np.ndarray, seed: int) -> PairTiming:
    rng = np.random.default_rng(seed)
    # rounds are resampled as pairs (the two models of one round ran under the same conditions)
    # and in blocks of consecutive rounds (see the module docstring)
    idx = block_resamples(len(arr_a), rng)
    t_a, t_b = _timing(arr_a, idx), _timing(arr_b, idx)
    ratios = np.median(arr_a[idx], axis=1) / np.median(arr_b[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return PairTiming(t_a, t_b, float(np.median(arr_a) / np.median(arr_b)), (float(lo), float(hi)),
                      (tuple(arr_a.tolist()), tuple(arr_b.tolist())))


def pooled(*pairs: PairTiming, seed: int = 0) -> PairTiming:
    """One timing from the rounds of several independent interleaved measurements of the same two
    models, so that a decision rests on more than one window of the machine's load."""
    a = np.concatenate([np.asarray(p.samples_s[0]) for p in pairs])
    b = np.concatenate([np.asarray(p.samples_s[1]) for p in pairs])
    return _pair(a, b, seed)


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
    return _timing(np.asarray(samples), block_resamples(len(samples), np.random.default_rng(seed)))
