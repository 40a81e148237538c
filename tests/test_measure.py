"""The benchmark harness and the evaluator (metrics and fidelity)."""

import itertools

import numpy as np
import pytest

from edgegate.stages.benchmark import benchmark_one, benchmark_pair, pooled
from edgegate.stages.evaluate import mse, score, stacked, topk


class StepClock:
    """A deterministic clock: each call to a timed function advances it by that function's cost."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_pair_interleaves_and_measures_the_ratio():
    clock = StepClock()
    calls = []
    noise = itertools.cycle([0.0, 0.0002, -0.0001])

    def slow():
        calls.append("a")
        clock.now += 0.004 + next(noise)

    def fast():
        calls.append("b")
        clock.now += 0.002 + next(noise)

    result = benchmark_pair(slow, fast, warmup=2, repeats=30, min_time_s=0.0, max_time_s=10, clock=clock)
    assert result.before.runs == result.after.runs == 30
    assert 1.8 < result.speedup < 2.2
    lo, hi = result.speedup_ci95
    assert lo <= result.speedup <= hi
    timed = calls[4:]                                # after warm-up
    assert timed[:4] == ["a", "b", "b", "a"]         # order alternates round by round
    assert result.before.p50_ms == pytest.approx(4.0, abs=0.25)


def test_a_burst_of_load_widens_the_interval_instead_of_shifting_it():
    """Noise on a shared machine is correlated in time: 60 of 100 rounds run under a burst that
    hides the speedup. The point estimate is skewed, but the block bootstrap's interval reaches
    the unloaded ratio, so a gate deciding on the interval's upper bound does not fail on it."""
    clock = StepClock()
    noise = itertools.cycle([0.0, 0.0001, -0.0001, 0.00005])
    rounds = [0]

    def a():
        clock.now += 0.004 + next(noise)

    def b():
        rounds[0] += 1
        clock.now += (0.004 if rounds[0] <= 60 else 0.002) + next(noise)

    p = benchmark_pair(a, b, warmup=0, repeats=100, min_time_s=0, max_time_s=100, clock=clock)
    assert p.speedup < 1.1                              # skewed by the burst
    lo, hi = p.speedup_ci95
    assert lo <= p.speedup and hi > 1.8                 # but the interval reaches the clean 2x
    steady = benchmark_pair(a, a, warmup=0, repeats=100, min_time_s=0, max_time_s=100, clock=clock)
    assert steady.speedup_ci95[1] - steady.speedup_ci95[0] < 0.2     # no burst: a narrow interval


def test_pooled_timings_decide_on_both_windows():
    def measured(cost_a, cost_b, seed):
        clock = StepClock()
        noise = itertools.cycle([0.0, 0.0001, -0.0001])

        def a():
            clock.now += cost_a + next(noise)

        def b():
            clock.now += cost_b + next(noise)

        return benchmark_pair(a, b, warmup=0, repeats=40, min_time_s=0.0, max_time_s=10,
                              clock=clock, seed=seed)

    loaded = measured(0.005, 0.004, 0)        # a window where load compressed the ratio
    clean = measured(0.004, 0.002, 1)
    assert len(loaded.samples_s[0]) == len(loaded.samples_s[1]) == 40
    both = pooled(loaded, clean)
    assert both.before.runs == both.after.runs == 80
    assert loaded.speedup_ci95[1] < 1.3 and clean.speedup_ci95[0] > 1.8
    assert loaded.speedup < both.speedup < clean.speedup
    assert both.speedup_ci95[0] <= both.speedup <= both.speedup_ci95[1]
    assert pooled(loaded, clean) == both                       # fixed seed: same timings, same numbers


def test_min_time_extends_and_max_time_caps_the_runs():
    clock = StepClock()

    def f():
        clock.now += 0.01

    t = benchmark_one(f, warmup=0, repeats=5, min_time_s=1.0, max_time_s=100, clock=clock)
    assert t.runs >= 100                             # kept going until 1 s had passed
    clock2 = StepClock()

    def g():
        clock2.now += 1.0

    t2 = benchmark_one(g, warmup=0, repeats=1000, min_time_s=0, max_time_s=10, clock=clock2)
    assert t2.runs <= 11


def test_topk_and_mse():
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 2])
    assert topk(logits, labels, 1) == pytest.approx(200 / 3)
    assert topk(logits, labels, 2) == pytest.approx(100.0)
    assert mse(np.array([[1.0], [3.0]]), np.array([1.0, 1.0])) == pytest.approx(2.0)
    assert score("fidelity", logits, labels) is None


def test_stacked_drops_a_batch_axis_of_one():
    samples = [np.ones((1, 10)) * i for i in range(4)]
    assert stacked(samples).shape == (4, 10)


def test_p99_only_from_enough_runs_and_throughput_from_the_mean():
    from edgegate.stages.benchmark import P99_MIN_RUNS

    def timed(n):
        clock = StepClock()
        costs = itertools.cycle([0.001] * 49 + [0.005])      # one slow run in 50: a tail

        def f():
            clock.now += next(costs)

        return benchmark_one(f, warmup=0, repeats=n, min_time_s=0, max_time_s=100, clock=clock)

    few = timed(P99_MIN_RUNS - 1)
    assert few.p99_ms is None and few.metrics()["latency_p99_ms"] is None
    many = timed(200)
    assert many.p50_ms == pytest.approx(1.0) and many.p99_ms > 4.0          # the tail shows
    lo, hi = many.p99_ci95_ms
    assert lo <= many.p99_ms <= hi
    mean_ms = (49 * 1.0 + 5.0) / 50
    assert many.throughput_ips == pytest.approx(1000 / mean_ms)
    t_lo, t_hi = many.throughput_ci95_ips
    assert t_lo <= many.throughput_ips <= t_hi


def test_a_missing_p99_says_why_and_a_pooled_one_drops_the_reason():
    from edgegate.stages.measurement import timing_gaps

    gaps: dict = {}
    timing_gaps({"latency_runs": 40, "latency_p99_ms": None, "speedup": 1.5}, gaps)
    assert "40 timed runs" in gaps["latency_p99_ms"] and "at least 100" in gaps["latency_p99_ms"]
    assert "latency_p99_ms_fp32" in gaps
    timing_gaps({"latency_runs": 140, "latency_p99_ms": 2.0, "latency_p99_ms_fp32": 3.0}, gaps)
    assert gaps == {}
