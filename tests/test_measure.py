"""The benchmark harness and the evaluator (metrics and fidelity)."""

import itertools

import numpy as np
import pytest

from edgegate.stages.benchmark import benchmark_one, benchmark_pair
from edgegate.stages.evaluate import fidelity, mse, score, stacked, topk


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


def test_fidelity_against_reference():
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 10)) for _ in range(50)]]
    same = fidelity(ref, ref)
    assert same["top1_agreement"] == 1.0 and same["cosine_similarity"] == pytest.approx(1.0)
    assert same["sqnr_db"] == float("inf")
    noisy = [[r + 0.1 * rng.standard_normal(r.shape) for r in ref[0]]]
    f = fidelity(ref, noisy)
    assert 15 < f["sqnr_db"] < 25                    # signal 1, noise 0.01 -> ~20 dB
    assert f["top1_agreement"] < 1.0 or f["cosine_similarity"] < 1.0
    # several outputs with dynamic shapes per sample (detection-like): compared per sample
    boxes_ref = [np.ones((1, n, 4)) for n in (3, 5)]
    det = fidelity([boxes_ref], [[b.copy() for b in boxes_ref]])
    assert det["top1_agreement"] is None and det["cosine_similarity"] == pytest.approx(1.0)
