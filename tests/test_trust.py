"""Issue 7: base-commit baselines, the results cache, policy integrity, statistics, fan-out."""

import json
import multiprocessing
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import commit_all, git, perturbed_copy
from edgegate.stages.stats import evaluation_too_small, paired_drop_ci95_pp, samples_needed


def edgegate(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def load(path):
    return json.loads(path.read_text())


# ------------------------------------------------------------------ statistics (no model needed)


def test_paired_interval_counts_only_discordant_samples():
    before = np.array([True] * 90 + [False] * 10)
    same = paired_drop_ci95_pp(before, before)
    assert same[2] == 0 and same[0] < 0 < same[1]          # no change: an interval around 0
    assert same[1] == pytest.approx(100 * 1.96 / 102, rel=1e-3)
    after = before.copy()
    after[:8] = False                                          # 8 samples lost, none gained
    low, high, discordant = paired_drop_ci95_pp(before, after)
    assert discordant == 8 and 0 < low < 8 < high              # a drop of 8 pp, proven > 0
    more = np.tile(before, 10), np.tile(after, 10)             # 10x the data: a narrower interval
    low10, high10, _ = paired_drop_ci95_pp(*more)
    assert high10 - low10 < (high - low) / 2 and low10 < 8 < high10


def test_evaluation_set_too_small_for_the_limit():
    assert samples_needed(1.0) == 194
    assert evaluation_too_small(540, 1.0) is None
    msg = evaluation_too_small(100, 1.0)
    assert "100 samples" in msg and "194" in msg
    assert evaluation_too_small(540, 0.25) is not None


# ------------------------------------------------------------------ policy integrity (no compile)


POLICY = "version: 1\ndevices:\n  x86-cpu:\n    max_accuracy_drop_pp: {drop}\n    min_speedup: {speed}\n"


def _policy_repo(model_repo, allow: bool):
    cfg = (model_repo / "edgegate.yml").read_text() + "policy: policy.yml\n"
    if allow:
        cfg += "allow_policy_changes: true\n"
    (model_repo / "edgegate.yml").write_text(cfg)
    (model_repo / "policy.yml").write_text(POLICY.format(drop=1.0, speed=1.1))
    commit_all(model_repo, "policy")
    (model_repo / "policy.yml").write_text(POLICY.format(drop=5.0, speed=1.2))
    commit_all(model_repo, "loosen the accuracy limit, tighten speed")


def test_a_loosened_policy_is_flagged_and_fails(model_repo):
    _policy_repo(model_repo, allow=False)
    proc = edgegate("run", "--base", "HEAD~1", "--no-cache", cwd=model_repo)
    report = load(model_repo / ".edgegate-out/report.json")
    changes = {c["limit"]: c for c in report["policy_changes"]}
    assert changes["max_accuracy_drop_pp"]["old"] == 1.0 and changes["max_accuracy_drop_pp"]["new"] == 5.0
    assert changes["max_accuracy_drop_pp"]["change"] == "loosened" and not changes["max_accuracy_drop_pp"]["allowed"]
    assert changes["max_accuracy_drop_pp"]["source"] == "policy.yml:4"
    assert changes["min_speedup"]["change"] == "tightened" and changes["min_speedup"]["allowed"]
    assert report["models"] == [] and report["verdict"] == "failed"
    assert proc.returncode == 1, proc.stderr
    comment = (model_repo / ".edgegate-out/comment.md").read_text()
    assert "loosens policy limits" in comment and "`max_accuracy_drop_pp`: 1.0 → 5.0" in comment
    # the base commit's limits are the ones applied
    assert any(f.endswith("@" + report["commits"]["base"][:7]) for f in report["policy_files"])


def test_a_loosened_policy_passes_when_the_base_commit_allows_it(model_repo):
    _policy_repo(model_repo, allow=True)
    proc = edgegate("run", "--base", "HEAD~1", "--no-cache", cwd=model_repo)
    report = load(model_repo / ".edgegate-out/report.json")
    assert [c["allowed"] for c in report["policy_changes"]] == [True, True]
    assert report["verdict"] == "passed" and proc.returncode == 0, proc.stderr
    assert "policy.yml" in report["policy_files"]


def test_a_failing_speed_limit_is_confirmed_by_a_second_timing(model_repo):
    # only the speed limit is under test: which artifact a 5 s search ships (INT8, or the FP32
    # floor when the head-to-head says so) is not, so the size limit is removed
    (model_repo / "policy.yml").write_text(POLICY.format(drop=50.0, speed=50.0) +
                                           "    min_size_ratio: null\n")
    (model_repo / "edgegate.yml").write_text((model_repo / "edgegate.yml").read_text() +
                                             "policy: policy.yml\nquantization:\n  search_time_s: 5\n")
    commit_all(model_repo, "a speed limit no model meets")
    proc = edgegate("run", "models/digits.onnx", "--no-cache", cwd=model_repo)
    assert proc.returncode == 1, proc.stderr
    result = load(model_repo / ".edgegate-out/report.json")["models"][0]["results"][0]
    assert [v["limit"] for v in result["violations"]] == ["min_speedup"]
    sc = result["measurement"]["speed_confirmation"]
    assert sc["decided_on"] == "both measurements pooled"
    for one in (sc["first"], sc["second"]):
        lo, hi = one["speedup_ci95"]
        assert lo <= one["speedup"] <= hi < 50
    m = result["metrics"]
    lo_pooled, hi_pooled = m["speedup_ci95"]
    assert lo_pooled <= m["speedup"] <= hi_pooled
    assert m["latency_runs"] == sc["first"]["runs"] + sc["second"]["runs"]      # pooled rounds
    comment = (model_repo / ".edgegate-out/comment.md").read_text()
    assert "a second independent timing was taken" in comment and "decided on both pooled" in comment


# ------------------------------------------------------------------ baseline + cache (two commits)


def test_two_commits_regression_delta_and_cache_hit(model_repo, tmp_path):
    cache = tmp_path / "cache"
    perturbed_copy(model_repo / "models/digits.onnx", model_repo / "models/other.onnx", seed=7)
    base = commit_all(model_repo, "a second model")
    # the default branch's run fills the cache
    main_run = edgegate("run", "models/digits.onnx", "models/other.onnx", "--cache-dir", str(cache),
                        "--out", "main-out", cwd=model_repo)
    assert main_run.returncode in (0, 1), main_run.stderr
    main = load(model_repo / "main-out/report.json")
    assert all(r["cache"]["hit"] is False for m in main["models"] for r in m["results"])
    # the pull request retrains one model
    perturbed_copy(model_repo / "models/digits.onnx", model_repo / "models/digits.onnx")
    head = commit_all(model_repo, "retrain digits")
    proc = edgegate("run", "--base", "HEAD~1", "--cache-dir", str(cache), cwd=model_repo)
    assert proc.returncode in (0, 1), proc.stderr
    report = load(model_repo / ".edgegate-out/report.json")
    assert report["commits"] == {"base": base, "head": head}
    (model,) = report["models"]
    assert model["path"] == "models/digits.onnx" and model["change"] == "modified"
    (result,) = model["results"]
    assert result["cache"]["hit"] is False                     # changed: measured now
    b = result["baseline"]
    assert b["commit"] == base and b["source"] == "cache" and b["status"] in ("passed", "failed")
    main_digits = next(m for m in main["models"] if m["path"] == "models/digits.onnx")["results"][0]
    assert b["metrics"]["size_bytes_after"] == main_digits["metrics"]["size_bytes_after"]
    assert b["delta"]["size_bytes_after"] == (result["metrics"]["size_bytes_after"]
                                              - main_digits["metrics"]["size_bytes_after"])
    assert b["delta"]["accuracy_after"] == pytest.approx(
        result["metrics"]["accuracy_after"] - main_digits["metrics"]["accuracy_after"])
    assert b["delta"]["peak_memory_mb"] == pytest.approx(
        result["metrics"]["peak_memory_mb"] - main_digits["metrics"]["peak_memory_mb"])
    # and both artifacts measured again in this run (the cached base's numbers are another run's)
    same = b["metrics"]["peak_memory_mb_same_run"]
    assert same > 0 and b["delta"]["memory_growth_pct_vs_base"] == pytest.approx(
        (result["metrics"]["peak_memory_mb"] / same - 1) * 100)
    lo, hi = b["delta"]["speedup_vs_base_ci95_low"], b["delta"]["speedup_vs_base_ci95_high"]
    assert lo <= b["delta"]["speedup_vs_base"] <= hi          # base and head timed interleaved
    # the unchanged model is carried forward from the cache, not recompiled
    (carried,) = report["carried"]
    assert carried["path"] == "models/other.onnx" and carried["change"] == "unchanged"
    (cr,) = carried["results"]
    assert cr["cache"]["hit"] is True and cr["metrics"] == next(
        m for m in main["models"] if m["path"] == "models/other.onnx")["results"][0]["metrics"]
    assert (model_repo / ".edgegate-out" / cr["artifact"]["path"]).is_file()
    assert "other: loading" not in proc.stderr and "other → x86-cpu: cache hit" in proc.stderr
    comment = (model_repo / ".edgegate-out/comment.md").read_text()
    assert f"**vs base** `{base[:7]}`" in comment and "carried forward from the cache" in comment
    # the same pull request again: everything comes from the cache, nothing is compiled
    again = edgegate("run", "--base", "HEAD~1", "--cache-dir", str(cache), "--out", "again",
                     cwd=model_repo)
    rerun = load(model_repo / "again/report.json")
    r2 = rerun["models"][0]["results"][0]
    assert r2["cache"]["hit"] is True and r2["metrics"] == result["metrics"]
    assert "compiling" not in again.stderr and rerun["verdict"] == report["verdict"]


# ------------------------------------------------------------------ fan-out: plan -> run --only -> merge


FANOUT_CONFIG = """version: 1
models:
  - path: models/*.onnx
    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [x86-cpu, edge-box]
policy: policy.yml
benchmark: {repeats: 20, min_time_s: 0.2, max_time_s: 5}
"""
FANOUT_POLICY = """version: 1
devices:
  edge-box:
    target: onnxruntime
    runner: edge-box
    threads: 1
    max_accuracy_drop_pp: 2.0
    min_size_ratio: 1.5
"""


def test_plan_run_only_merge_gives_the_one_run_report(model_repo, tmp_path):
    (model_repo / "edgegate.yml").write_text(FANOUT_CONFIG)
    (model_repo / "policy.yml").write_text(FANOUT_POLICY)
    commit_all(model_repo, "two devices")
    perturbed_copy(model_repo / "models/digits.onnx", model_repo / "models/digits.onnx")
    commit_all(model_repo, "retrain")
    cache = tmp_path / "cache"
    one = edgegate("run", "--base", "HEAD~1", "--cache-dir", str(cache), "--baseline", "off",
                   "--out", "one", cwd=model_repo)
    assert one.returncode in (0, 1), one.stderr
    plan = edgegate("plan", "--base", "HEAD~1", cwd=model_repo)
    matrix = json.loads(plan.stdout)
    assert matrix["count"] == 2
    assert [(e["only"], e["runner"]) for e in matrix["include"]] == [
        ("models/digits.onnx@x86-cpu", None),
        ("models/digits.onnx@edge-box", "edge-box")]
    parts = []
    for i, entry in enumerate(matrix["include"]):
        # the matrix jobs share the results cache (actions/cache in a workflow): compilation picks
        # configurations by measured speed, so only shared results make exact sizes comparable; the
        # merged report must reassemble the one run exactly
        proc = edgegate("run", "--base", "HEAD~1", "--only", entry["only"], "--baseline", "off",
                        "--cache-dir", str(cache), "--out", f"part{i}", cwd=model_repo)
        assert proc.returncode in (0, 1), proc.stderr
        part = load(model_repo / f"part{i}/report.json")
        assert part["only"] == [entry["only"]] and len(part["models"][0]["results"]) == 1
        parts.append(f"part{i}")
    # the device runner job: measure the edge-box artifact on "the device" (this machine)
    measured = edgegate("measure", "part1", "--out", "measured", "--runner-label", "edge-box-1",
                        cwd=model_repo)
    assert measured.returncode in (0, 1), measured.stderr
    merged_proc = edgegate("merge", *parts, "measured", "--out", "merged", cwd=model_repo)
    assert merged_proc.returncode == one.returncode, merged_proc.stderr
    single, merged = load(model_repo / "one/report.json"), load(model_repo / "merged/report.json")
    assert merged["verdict"] == single["verdict"] and merged["only"] == []
    assert [m["path"] for m in merged["models"]] == [m["path"] for m in single["models"]]
    for ms, mm in zip(single["models"], merged["models"]):
        assert ms["status"] == mm["status"]
        assert [r["device"] for r in mm["results"]] == ["x86-cpu", "edge-box"]
        for rs, rm in zip(ms["results"], mm["results"]):
            assert rs["status"] == rm["status"] and rs["artifact"] == rm["artifact"]
            for key in ("size_bytes_before", "size_bytes_after", "size_ratio", "accuracy_before",
                        "accuracy_after", "accuracy_drop_pp", "eval_samples"):
                assert rs["metrics"][key] == pytest.approx(rm["metrics"][key]), key
            assert [c["limit"] for c in rs["checks"]] == [c["limit"] for c in rm["checks"]]
    edge = merged["models"][0]["results"][1]
    assert edge["measurement"]["where"] == "device" and edge["measurement"]["runner_label"] == "edge-box-1"
    assert "speedup" in edge["measurement"]["measured_on_device"]
    # peak memory and load time taken on the device too, each model in a fresh process there
    assert "peak_memory_mb" in edge["measurement"]["measured_on_device"]
    assert edge["metrics"]["peak_memory_mb"] > 0 and edge["metrics"]["load_time_ms_fp32"] > 0
    assert edge["measurement"]["memory"]["artifact"]["machine"] == edge["measurement"]["machine"]
    # energy: this machine's power source, or (no tegrastats, no readable powercap) the reason
    from edgegate.stages.power import NoPowerSource, open_source

    try:
        open_source()
        assert edge["metrics"]["energy_mj_per_inference"] > 0
        assert edge["measurement"]["energy"]["source"]
    except NoPowerSource:
        assert edge["metrics"]["energy_mj_per_inference"] is None
        assert edge["metrics"]["not_measured"]["energy_mj_per_inference"].startswith(
            "not measured: no power source (tegrastats: not on PATH")
        assert "energy_mj_per_inference" not in edge["measurement"]["measured_on_device"]
    assert merged["models"][0]["results"][0]["measurement"]["where"] == "host"
    for r in merged["models"][0]["results"]:
        assert (model_repo / "merged" / r["artifact"]["path"]).is_file()
    comment = (model_repo / "merged/comment.md").read_text()
    assert "📟" in comment and "runner edge-box-1" in comment


# ------------------------------------------------------------------ repeated runs under load


def _burn(seconds):
    import time

    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


@pytest.mark.slow
def test_repeated_runs_on_an_unchanged_model_never_change_the_verdict(model_repo):
    """Five gate runs of one unchanged model, with the other core busy throughout.

    The model is the digits CNN at width 32. Its INT8 speedup, measured here under this load at
    two threads, was 1.85-2.44x in each of 60 windows of 0.2 s: clear of the built-in min_speedup
    1.1. So a flip could only come from the gate itself: a skewed interval, or a search that falls
    back to FP32 or dynamic INT8 on a burst (the width-16 model showed both before the fixes).
    The width-16 model is not used here. Under the same load its speedup moved between 0.8x and
    1.6x from one 0.2 s window to the next, across the limit, and no gate can give such a model a
    single verdict. When it fails, its report shows both timings."""
    import digits

    model, _ = digits.train_cnn(seed=0, epochs=3, width=32)
    digits.export_onnx(model, model_repo / "models/digits.onnx")
    # the benchmark settings users get (conftest's CONFIG shortens them for speed)
    config = (model_repo / "edgegate.yml").read_text()
    (model_repo / "edgegate.yml").write_text(config[:config.index("benchmark:")])
    commit_all(model_repo, "the width-32 model")
    verdicts, statuses, sizes = [], [], []
    load_proc = multiprocessing.get_context("spawn").Process(target=_burn, args=(300,), daemon=True)
    load_proc.start()
    try:
        for i in range(5):
            proc = edgegate("run", "models/digits.onnx", "--no-cache", "--out", f"r{i}", cwd=model_repo)
            report = load(model_repo / f"r{i}/report.json")
            assert proc.returncode in (0, 1), proc.stderr
            verdicts.append(report["verdict"])
            result = report["models"][0]["results"][0]
            statuses.append({c["limit"]: c["passed"] for c in result["checks"]})
            sizes.append(result["artifact"]["size_bytes"])
    finally:
        load_proc.terminate()
        load_proc.join()
    # the latency gate decides on interval bounds: it must never flip on the load
    assert len({s["min_speedup"] for s in statuses}) == 1, statuses
    # every speed decision of the precision search needs a margin confirmed twice, a failing
    # speed limit is confirmed by a second timing, and INT8 gives way to the FP32 floor only when
    # it is slower than FP32 in every search timing: the verdict and every check stay the same
    assert len(set(verdicts)) == 1, (verdicts, sizes)
    assert all(s == statuses[0] for s in statuses), (statuses, sizes)
