"""Choosing among candidate runtimes (edgegate/gate/candidates.py): the rules on result records.
The end-to-end run with real runtimes is in test_target_openvino.py."""

from __future__ import annotations

import pytest

from edgegate.report.model import Check, DeviceResult, Metrics
from edgegate.gate.candidates import candidate_targets, choose


def result(target, status="passed", p50=1.0, violations=()):
    checks = [Check(limit=v, metric="speedup", threshold=1.5, measured=1.0, passed=False,
                    source="policy.yml:3") for v in violations]
    return DeviceResult(device="box", target=target, status=status, violations=checks,
                        metrics=Metrics(latency_p50_ms_after=p50 if status in ("passed", "failed") else None))


def never(a, b):
    raise AssertionError("no interleaved comparison is needed here")


def test_the_measurably_faster_passing_candidate_ships():
    ort, ov = result("onnxruntime", p50=0.5), result("openvino", p50=0.3)
    # compare(first, second) -> second's p50 / first's p50 and its 95 % interval
    chosen, why, h2h = choose([ort, ov], "onnxruntime", lambda a, b: (1.6, (1.4, 1.8)))
    assert chosen is ov and "openvino meets the policy" in why and "1.60× faster" in why
    assert h2h == {"onnxruntime": {"ratio": 1.6, "ci95": [1.4, 1.8]}}


def test_the_interleaved_timing_overrules_the_separate_ones():
    ort, ov = result("onnxruntime", p50=0.5), result("openvino", p50=0.3)
    chosen, _, h2h = choose([ort, ov], "openvino", lambda a, b: (0.5, (0.45, 0.55)))
    assert chosen is ort and h2h["openvino"]["ratio"] == 2.0


def test_noise_does_not_flip_the_choice_the_profiles_target_ships():
    ort, ov = result("onnxruntime", p50=0.30), result("openvino", p50=0.31)
    chosen, why, _ = choose([ort, ov], "openvino", lambda a, b: (1.02, (0.95, 1.10)))
    assert chosen is ov and "not distinguishable" in why and "device profile's target" in why


def test_a_candidate_that_meets_the_policy_beats_a_faster_one_that_does_not():
    fast_fail = result("openvino", "failed", p50=0.1, violations=["max_accuracy_drop_pp"])
    slow_pass = result("onnxruntime", p50=0.9)
    chosen, why, _ = choose([fast_fail, slow_pass], "openvino", never)
    assert chosen is slow_pass and "only candidate runtime that meets the policy" in why
    assert "openvino" in why


def test_none_meets_the_policy_the_fewest_violations_is_reported():
    two = result("openvino", "failed", p50=0.1, violations=["min_speedup", "max_size_mb"])
    one = result("onnxruntime", "failed", p50=0.9, violations=["min_speedup"])
    chosen, why, _ = choose([two, one], "openvino", lambda a, b: (0.2, (0.1, 0.3)))
    assert chosen is one and "misses the policy by the fewest limits" in why


def test_an_unavailable_candidate_leaves_the_other():
    skipped = DeviceResult(device="box", target="openvino", status="skipped",
                           reason="not installed: openvino; install with pip install \"edgegate-ci[openvino]\"")
    ort = result("onnxruntime")
    chosen, why, _ = choose([skipped, ort], "openvino", never)
    assert chosen is ort and "openvino" in why
    chosen, why, _ = choose([skipped], "openvino", never)
    assert chosen is skipped and "could be measured" in why


def test_a_failed_interleaved_comparison_falls_back_to_the_separate_timings():
    def broken(a, b):
        raise RuntimeError("cannot load twice")

    ort, ov = result("onnxruntime", p50=0.5), result("openvino", p50=0.3)
    chosen, why, h2h = choose([ov, ort], "openvino", broken)
    assert chosen is ov and "interleaved comparison failed" in why
    assert h2h["onnxruntime"]["ci95"] is None


def test_unknown_candidate_targets_are_configuration_errors():
    from edgegate.config.load import ResolvedDevice
    from edgegate.config.policy_schema import DeviceProfile
    from edgegate.errors import ConfigError

    good = ResolvedDevice("box", "openvino", DeviceProfile(target="openvino",
                                                           candidates=["openvino", "onnxruntime", "openvino"]))
    assert candidate_targets(good) == ["openvino", "onnxruntime"]
    bad = ResolvedDevice("box", "openvino", DeviceProfile(target="openvino", candidates=["openvion"]),
                         sources=("policy.yml",))
    with pytest.raises(ConfigError) as err:
        candidate_targets(bad)
    assert err.value.field == "devices.box.candidates" and "openvino" in err.value.fix


def test_when_failing_measures_the_other_candidates_only_if_the_target_misses_the_policy():
    from edgegate.config.load import ResolvedDevice
    from edgegate.config.policy_schema import DeviceProfile
    from edgegate.gate.candidates import gate_candidates

    class Ctx:
        class progress:
            @staticmethod
            def step(text):
                pass
        class config:
            class benchmark:
                threads = None
        out_dir = None

    class Prepared:
        name = "m"

        class data:
            class evaluation:
                @staticmethod
                def feed(i):
                    return {}

    device = ResolvedDevice("x86-cpu", "onnxruntime", DeviceProfile(
        target="onnxruntime", candidates=["onnxruntime", "openvino"], try_candidates="when-failing"))
    for ort_status, tried in (("passed", ["onnxruntime"]), ("failed", ["onnxruntime", "openvino"])):
        seen = []

        def gate(prepared, one, ctx, workdir, ort_status=ort_status, seen=seen):
            seen.append(one.target)
            status = ort_status if one.target == "onnxruntime" else "skipped"
            return result(one.target, status, violations=["min_speedup"] if status == "failed" else ())

        from pathlib import Path
        chosen = gate_candidates(gate, Prepared, device, Ctx, Path("/nonexistent"))
        assert seen == tried
        if ort_status == "passed":
            assert "when-failing" in chosen.selection and not chosen.alternatives
