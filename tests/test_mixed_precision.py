"""Accuracy-aware compression on real trained models: layer blame, mixed precision, the search.

The hard model is the trained digits CNN with a function-preserving outlier rescale in its
classifier head (examples/quant_models.py): FP32 outputs are unchanged, naive all-INT8 collapses.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import quant_models
from conftest import ROOT

from edgegate.config.load import Limit
from edgegate.config.schema import QuantizationSpec
from edgegate.data.sources import Dataset
from edgegate.errors import ConfigError
from edgegate.stages.search import PrecisionSearch
from edgegate.targets.onnxruntime import OrtRunner

BUDGET_PP = 1.0


@pytest.fixture(scope="module")
def outlier(digits_onnx_cached, tmp_path_factory):
    folder = tmp_path_factory.mktemp("outlier")
    names = quant_models.inject_outliers(digits_onnx_cached / "digits.onnx", folder / "outlier.onnx")
    cal = np.load(digits_onnx_cached / "data/calibration.npz")
    ev = np.load(digits_onnx_cached / "data/evaluation.npz")
    calibration = Dataset({"input": cal["input"][:200]}, None, {"method": "minmax"})
    evaluation = Dataset({"input": ev["input"]}, ev["labels"], {"metric": "top1"})
    return folder / "outlier.onnx", names, calibration, evaluation, digits_onnx_cached


def search(outlier, tmp_path, **spec):
    path, _, calibration, evaluation, _ = outlier
    tmp_path.mkdir(parents=True, exist_ok=True)
    limits = {"max_accuracy_drop_pp": Limit("max_accuracy_drop_pp", BUDGET_PP, "policy.yml", 3)}
    s = PrecisionSearch(model_path=path, baseline_path=path, calibration=calibration,
                        evaluation=evaluation, spec=QuantizationSpec(**spec), limits=limits,
                        workdir=tmp_path, make_runner=lambda p: OrtRunner(p, 2),
                        activation_types=["uint8"])
    return s, s.run()


def test_outlier_rescale_keeps_fp32_outputs(outlier):
    path, _, _, evaluation, src = outlier
    a = OrtRunner(src / "digits.onnx").infer({"input": evaluation.inputs["input"][:32]})[0]
    b = OrtRunner(path).infer({"input": evaluation.inputs["input"][:32]})[0]
    assert np.allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_balanced_meets_the_budget_that_all_int8_misses(outlier, tmp_path):
    _, (producer, consumer), *_ = outlier
    s, r = search(outlier, tmp_path, level="balanced")
    all_int8 = r.candidates[0]
    assert all_int8["config"]["kept_in_float"] == [] and all_int8["accuracy_drop_pp"] > BUDGET_PP
    assert r.met is True and r.verdict.startswith("met")
    assert r.chosen.quality.accuracy_drop_pp <= BUDGET_PP
    # the blame table puts the two outlier layers on top and the search kept exactly those in float
    assert {row["node"] for row in r.blame[:2]} == {producer, consumer}
    assert r.blame[0]["sqnr_db"] < 10 < r.blame[2]["sqnr_db"]
    for node in (producer, consumer):
        assert node in r.kept and r.kept[node].startswith("accuracy")
        assert node not in r.int8_nodes
    # still mostly INT8, and faster than FP32 by the search's own interleaved measurement
    assert r.coverage()["int8"] > 0.9
    assert r.extra["final_timing"]["speedup_vs_fp32"] > 1.0
    # every layer kept in float for speed was measured slower in INT8 first (alone or its class)
    for node, why in r.kept.items():
        if why.startswith("speed"):
            rec = next(c for c in r.candidates if c.get("accepted") and (
                (c["stage"] == "speed" and c["config"]["kept_in_float"][-1] == node)
                or (c["stage"] == "speed_class" and node in c["config"]["kept_in_float"])))
            assert rec["speedup_ci95"][0] > 1.0
    assert sum(c["chosen"] for c in r.candidates) == 1
    assert r.chosen.path.is_file()


def test_time_budget_out_gives_a_failing_verdict_with_the_best_found(outlier, tmp_path):
    s, r = search(outlier, tmp_path, level="balanced", search_time_s=0.01)
    assert s.timed_out_at is not None
    assert r.met is False and r.verdict.startswith("failed") and "time budget" in r.verdict
    assert r.chosen.path.is_file() and r.candidates


def test_aggressive_ignores_accuracy_and_conservative_measures_fp16(outlier, tmp_path):
    _, r = search(outlier, tmp_path / "a", level="aggressive", search_time_s=30)
    assert r.level == "aggressive" and not any(w.startswith("accuracy") for w in r.kept.values())
    assert not any(c["stage"] == "mixed_precision" for c in r.candidates)   # no accuracy search
    _, c = search(outlier, tmp_path / "c", level="conservative")
    tried = {x["config"]["precision"]: x for x in c.candidates}
    assert set(tried) == {"fp32", "fp16", "int8-dynamic"}       # fp32: the floor, timed too
    for rec in tried.values():
        assert rec["latency_p50_ms"] is not None and rec["speedup_vs_fp32"] > 0
    assert c.chosen.cfg.precision in ("fp16", "int8-dynamic", "fp32")
    if c.chosen.cfg.precision == "fp32":
        assert "FP32 kept" in c.verdict


def test_level_is_validated():
    assert QuantizationSpec().level == "balanced"
    from edgegate.config.load import load_config

    with pytest.raises(ConfigError) as err:
        from pathlib import Path as _P
        import tempfile

        d = _P(tempfile.mkdtemp())
        (d / "edgegate.yml").write_text("version: 1\nquantization:\n  level: reckless\n")
        load_config(d / "edgegate.yml")
    assert err.value.line == 3


@pytest.mark.slow
def test_report_and_comment_show_the_blame(outlier, tmp_path):
    path, (producer, consumer), _, _, src = outlier
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copytree(src / "data", repo / "data")
    shutil.copy(path, repo / "models/outlier.onnx")
    (repo / "edgegate.yml").write_text(
        "version: 1\nmodels:\n  - path: models/outlier.onnx\n    calibration: data/calibration.npz\n"
        "    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}\n"
        "benchmark: {repeats: 10, min_time_s: 0.1, max_time_s: 2}\n"
        "quantization: {search_time_s: 60}\n")
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "models/outlier.onnx"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    (result,) = report["models"][0]["results"]
    q = result["quantization"]
    assert q["search"]["met"] is True and q["search"]["budget"]["source"].startswith("policies/")
    assert {k["node"] for k in q["kept_in_float"]} >= {producer, consumer}
    assert [b["node"] for b in q["blame"][:2]] and {b["node"] for b in q["blame"][:2]} == {producer, consumer}
    assert abs(sum(q["precision_coverage"].values()) - 1) < 1e-3
    assert result["metrics"]["accuracy_drop_pp"] <= BUDGET_PP
    comment = (repo / ".edgegate-out/comment.md").read_text()
    assert "Layer blame" in comment and "Precision coverage: INT8" in comment
    assert f"{producer.replace('/', '/')}" in comment and "kept in float" in comment


@pytest.mark.slow
def test_benchmark_script_quick_mode_runs():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/compare_quantize.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "onnxruntime defaults" in out and "edgegate balanced" in out
    for name in ("digits-cnn", "digits-outlier", "digits-attention"):
        assert name in out
