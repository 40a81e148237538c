"""The search's speed decisions on MatMul-heavy and depthwise-separable models trained on digits.

Everything is real (training, quantization, ONNX Runtime scoring) except the clock: as in
test_search_noise.py, ``time_pair`` is replaced by scripted timings, so each rule (dynamic INT8
measured against static INT8, an op class kept in float) is checked deterministically.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

import digits
import quant_models
from test_search_noise import ScriptedSearch, kind_of

from edgegate.config.load import Limit
from edgegate.config.schema import QuantizationSpec
from edgegate.data.sources import Dataset
from edgegate.stages.quantize import classify_nodes
from edgegate.stages.speed_pass import op_classes
from edgegate.targets.onnxruntime import OrtRunner


def _data():
    x_train, _, x_test, y_test = digits.digits_data()
    return (Dataset({"input": x_train[:100]}, None, {"method": "minmax"}),
            Dataset({"input": x_test[:300]}, y_test[:300], {"metric": "top1"}))


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    """The tiny transformer of examples/quant_models.py: every compute node a MatMul or Gemm."""
    pytest.importorskip("torch")
    model, _ = quant_models.train_attention(seed=0, epochs=3)
    path = digits.export_onnx(model, tmp_path_factory.mktemp("attention") / "attention.onnx")
    return (path, *_data())


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    """A depthwise-separable CNN: three depthwise 3x3 + pointwise 1x1 blocks."""
    pytest.importorskip("torch")
    model, _ = quant_models.train_separable(seed=0, epochs=2)
    path = digits.export_onnx(model, tmp_path_factory.mktemp("separable") / "separable.onnx")
    return (path, *_data())


class PathsSearch(ScriptedSearch):
    """Also hands the script the two model paths (to see which nodes each runs in INT8)."""

    def time_pair(self, a, b):
        self.calls_a, self.calls_b = a, b
        return super().time_pair(a, b)


def run(model, tmp_path, script, **spec):
    path, calibration, evaluation = model
    limits = {"max_accuracy_drop_pp": Limit("max_accuracy_drop_pp", 5.0, "policy.yml", 3)}
    s = PathsSearch(script, model_path=path, baseline_path=path, calibration=calibration,
                    evaluation=evaluation, spec=QuantizationSpec(search_time_s=300, **spec),
                    limits=limits, workdir=tmp_path, make_runner=lambda p: OrtRunner(p, 1),
                    activation_types=["uint8"])
    return s, s.run()


def then_even(ratios):
    """The scripted head-to-head ratios, then 1.0 (no difference) for every later timing."""
    return itertools.chain(ratios, itertools.repeat(1.0))


# ------------------------------------------------------------------ dynamic INT8 (MatMul-heavy)

def dynamic_script(head_to_head):
    """Static INT8 1.5x FP32, dynamic INT8 2.0x FP32; dynamic vs static head to head from
    ``head_to_head``; nothing faster in float in the speed passes."""

    def script(s, ka, kb, vs_fp32):
        if vs_fp32:
            return {"int8": 1.5, "int8-dynamic": 2.0}.get(kb, 1.0)
        if (ka, kb) == ("int8", "int8-dynamic"):
            return next(head_to_head)
        return 1.0

    return script


def test_matmul_heavy_model_gets_dynamic_int8_when_clearly_faster(attention, tmp_path):
    s, r = run(attention, tmp_path, dynamic_script(then_even([1.3, 1.3])), per_channel=True)
    info = r.extra["dynamic_int8"]
    assert info["matmul_mac_share"] >= 0.5 and info["tried"] and info["chosen"]
    assert r.chosen.cfg.precision == "int8-dynamic" and kind_of(r.chosen.path) == "int8-dynamic"
    dyn = next(c for c in r.candidates if c["stage"] == "dynamic")
    assert dyn["chosen"] and dyn["meets_budget"] and len(dyn["head_to_head_ci95"]) == 2
    assert all(ci[0] > 1.03 for ci in dyn["head_to_head_ci95"])
    assert r.verdict.startswith("dynamic INT8 chosen by measurement: clearly faster than static INT8")
    assert r.int8_nodes and all(s.op_types[n] in ("MatMul", "Gemm") for n in r.int8_nodes)
    # the static INT8 search ran first and is on record
    assert any(c["stage"] == "activation_type" for c in r.candidates)
    assert sum(c["chosen"] for c in r.candidates) == 1


def test_dynamic_int8_not_confirmed_head_to_head_keeps_static(attention, tmp_path):
    s, r = run(attention, tmp_path, dynamic_script(then_even([1.3, 1.0])), per_channel=True)
    info = r.extra["dynamic_int8"]
    assert info["tried"] and not info["chosen"]
    assert r.chosen.cfg.precision == "int8" and kind_of(r.chosen.path) == "int8"
    dyn = next(c for c in r.candidates if c["stage"] == "dynamic")    # recorded either way
    assert not dyn["chosen"] and len(dyn["head_to_head_ci95"]) == 2
    assert "not clearly faster" in dyn["note"]
    assert not r.verdict.startswith("dynamic")
    assert not any(p.name.startswith("candidate-") and p != r.chosen.path
                   and kind_of(p) == "int8-dynamic" for p in tmp_path.glob("candidate-*.onnx"))


def test_conv_model_does_not_time_dynamic_int8_at_balanced(separable, tmp_path):
    _, r = run(separable, tmp_path, lambda s, ka, kb, vs: 1.4 if vs and kb == "int8" else 1.0,
               per_channel=True)
    info = r.extra["dynamic_int8"]
    assert not info["tried"] and info["matmul_mac_share"] < 0.5 and "MatMul/Gemm hold" in info["why"]
    assert not any(c["stage"] == "dynamic" for c in r.candidates)


# ------------------------------------------------------------------ op classes (depthwise Conv)

def depthwise_script(head_to_head):
    """Static INT8 1.4x FP32. Head to head, a configuration that puts depthwise Conv nodes back
    in float (and nothing else) is faster by ``head_to_head``; every other change is not."""
    classes = {}

    def script(s, ka, kb, vs_fp32):
        if vs_fp32:
            return 1.4 if kb == "int8" else 1.0
        if not classes:
            classes.update(op_classes(onnx.load(str(s.model_path))))
        qa = set(classify_nodes(onnx.load(str(s.calls_a)))[0])
        qb = set(classify_nodes(onnx.load(str(s.calls_b)))[0])
        undone = qa - qb
        if undone and all(classes[n] == "depthwise Conv" for n in undone):
            return next(head_to_head)
        return 1.0

    return script


def test_depthwise_class_slower_in_int8_is_kept_in_float(separable, tmp_path):
    s, r = run(separable, tmp_path, depthwise_script(then_even([1.2, 1.2])), per_channel=True)
    classes = op_classes(onnx.load(str(s.model_path)))
    depthwise = sorted(n for n, c in classes.items() if c == "depthwise Conv")
    pointwise = [n for n, c in classes.items() if c == "pointwise Conv (1x1)"]
    assert len(depthwise) == 3 and len(pointwise) == 3
    assert r.chosen.cfg.precision == "int8"
    assert set(depthwise) <= set(r.chosen.cfg.excluded)
    for node in depthwise:
        why = r.kept[node]
        assert why.startswith("speed: depthwise Conv runs slower in INT8 here: ")
        assert "ms in float vs" in why and "ms quantized (model latency), 3 nodes" in why
        assert node not in r.int8_nodes
    assert set(pointwise) <= set(r.int8_nodes)             # the other classes stay INT8
    summary = {c["op_class"]: c for c in r.extra["speed_classes"]}
    dw = summary["depthwise Conv"]
    assert dw["accepted"] and dw["nodes"] == 3 and dw["speedup_ci95"][0] > 1.03
    assert dw["confirmation_speedup_ci95"][0] > 1.03
    assert dw["latency_p50_ms"] < dw["latency_p50_ms_previous"]
    assert not summary["pointwise Conv (1x1)"]["accepted"]
    # classes are tried largest MAC share first, then the per-layer pass runs on what remains
    shares = [c["mac_share"] for c in r.extra["speed_classes"]]
    assert shares == sorted(shares, reverse=True)
    stages = [c["stage"] for c in r.candidates]
    layer = [c for c in r.candidates if c["stage"] == "speed"]
    assert layer and stages.index("speed") > max(i for i, st in enumerate(stages) if st == "speed_class")
    assert not any(c["config"]["kept_in_float"][-1] in depthwise for c in layer)


def test_depthwise_class_not_confirmed_stays_int8(separable, tmp_path):
    s, r = run(separable, tmp_path, depthwise_script(then_even([1.2, 1.0])),
                     per_channel=True)
    classes = op_classes(onnx.load(str(s.model_path)))
    depthwise = [n for n, c in classes.items() if c == "depthwise Conv"]
    assert set(depthwise) <= set(r.int8_nodes)
    assert not any(why.startswith("speed") for why in r.kept.values())
    dw = next(c for c in r.extra["speed_classes"] if c["op_class"] == "depthwise Conv")
    assert not dw["accepted"] and dw["note"] == "not confirmed by a second measurement"
    assert np.isfinite(dw["speedup_vs_previous"])


# ------------------------------------------------------------------ the report record (target)

def test_onnxruntime_target_records_why_int8_lost(digits_onnx_cached, tmp_path, monkeypatch):
    """Through OnnxRuntimeTarget.compile: static and dynamic INT8 slower than FP32 in every
    timing, min_speedup 1.1 set. The floor ships as the artifact, and the quantization record
    says why, in the fields the report carries."""
    from edgegate.config.load import ResolvedDevice
    from edgegate.config.policy_schema import DeviceProfile
    from edgegate.config.schema import BenchmarkSpec
    from edgegate.stages.analyze import analyze
    from edgegate.stages.search import PrecisionSearch
    from edgegate.targets.base import CompileJob
    from edgegate.targets.onnxruntime import OnnxRuntimeTarget
    from test_search_noise import scripted

    def time_pair(self, a, b):
        if a != self.baseline_path:
            return scripted(1.0)
        return scripted({"int8": 0.78, "int8-s8": 0.78, "fp32": 1.04}.get(kind_of(b), 0.9))

    monkeypatch.setattr(PrecisionSearch, "time_pair", time_pair)
    path = digits_onnx_cached / "digits.onnx"
    cal = np.load(digits_onnx_cached / "data/calibration.npz")["input"][:100]
    ev = np.load(digits_onnx_cached / "data/evaluation.npz")
    limits = {"max_accuracy_drop_pp": Limit("max_accuracy_drop_pp", 2.0, "policy.yml", 3),
              "min_speedup": Limit("min_speedup", 1.1, "policy.yml", 4)}
    job = CompileJob(model_path=path, source_path=path, info=analyze(onnx.load(str(path))),
                     calibration=Dataset({"input": cal}, None, {"method": "minmax"}),
                     evaluation=Dataset({"input": ev["input"][:300]}, ev["labels"][:300],
                                        {"metric": "top1"}),
                     device=ResolvedDevice("x86-cpu", "onnxruntime",
                                           DeviceProfile(target="onnxruntime"), limits),
                     quantization=QuantizationSpec(search_time_s=120, activation_type="uint8"),
                     benchmark=BenchmarkSpec(), workdir=tmp_path, display="models/digits.onnx",
                     name="digits")
    out = OnnxRuntimeTarget().compile(job)
    q = out.quantization
    assert out.precision == "fp32" and out.artifact.name == "digits.x86-cpu.fp32.onnx"
    assert kind_of(out.artifact) == "fp32"
    assert q["method"].endswith("graph optimized offline by ONNX Runtime (ORT_ENABLE_EXTENDED)")
    assert q["why_not_int8"].startswith("static INT8 (best found) measured 0.78x FP32 here")
    assert q["why_not_int8"] in out.notes
    search = q["search"]
    assert search["fallback"]["shipped"] == "fp32-floor"
    assert search["fallback"]["limits_not_met"] == ["min_speedup 1.1 (the search measured 1.04x)"]
    assert search["fp32_floor"] == {"optimized": True, "description": search["candidates"][
        search["fallback"]["measured"][0] - 1]["floor"]}
    assert "the gate fails on that limit" in search["verdict"]
    assert q["int8_mac_share"] in (0, None) and q["compute_nodes_quantized"] == 0


def test_a_slower_int8_never_ships_even_when_the_time_budget_has_run_out(separable, tmp_path):
    # RapidOCR's direction classifier (quick benchmark, 20 s budget) shipped INT8 at 0.66x: the
    # budget ran out before the FP32 floor was measured. The fallback is now measured past it.
    path, calibration, evaluation = separable
    ticks = itertools.count()

    def clock():              # the first reading starts the search; every later one is past the budget
        return 0.0 if next(ticks) == 0 else 1e6

    limits = {"max_accuracy_drop_pp": Limit("max_accuracy_drop_pp", 5.0, "policy.yml", 3)}
    s = PathsSearch(lambda s, ka, kb, vs: 0.6 if vs and kb == "int8" else 1.0, model_path=path,
                    baseline_path=path, calibration=calibration, evaluation=evaluation,
                    spec=QuantizationSpec(search_time_s=1), limits=limits, workdir=tmp_path,
                    make_runner=lambda p: OrtRunner(p, 1), activation_types=["uint8"], clock=clock)
    r = s.run()
    assert r.chosen.cfg.precision != "int8", r.verdict
    assert r.extra["fallback"]["shipped"] == "fp32-floor"
    assert "never ships" in r.extra["int8_final_timing"]["note"]
