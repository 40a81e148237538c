"""The core path end to end on a real trained model, through the real CLI."""

import json
import subprocess
import sys

import onnx
import pytest

from conftest import commit_all, perturbed_copy


def edgegate(*args, cwd):
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def gated(tmp_path_factory, digits_onnx_cached):
    """One run over a change: a retrained model (good) and a truncated one (corrupt)."""
    import shutil

    from conftest import CONFIG, git

    repo = tmp_path_factory.mktemp("e2e") / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models/digits.onnx")
    (repo / "edgegate.yml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "first")
    perturbed_copy(repo / "models/digits.onnx", repo / "models/digits.onnx")
    data = (repo / "models/digits.onnx").read_bytes()
    (repo / "models/broken.onnx").write_bytes(data[: len(data) // 3])
    commit_all(repo, "retrain + a broken upload")
    proc = edgegate("run", "--base", "HEAD~1", cwd=repo)
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    return repo, proc, report


def test_one_error_row_and_one_measured_row(gated):
    repo, proc, report = gated
    models = {m["path"]: m for m in report["models"]}
    assert set(models) == {"models/digits.onnx", "models/broken.onnx"}
    broken = models["models/broken.onnx"]
    assert broken["status"] == "error" and broken["error"]["kind"] == "input"
    assert broken["error"]["file"] == "models/broken.onnx" and broken["error"]["fix"]
    good = models["models/digits.onnx"]
    assert good["change"] == "modified" and good["framework"] == "onnx"
    (result,) = good["results"]
    assert result["status"] in ("passed", "failed")
    m = result["metrics"]
    for key in ("size_bytes_before", "size_bytes_after", "size_ratio", "latency_p50_ms_before",
                "latency_p50_ms_after", "speedup", "accuracy_before", "accuracy_after",
                "accuracy_drop_pp", "top1_agreement"):
        assert m[key] is not None, key
    assert m["size_ratio"] > 3.0                      # int8 weights: about 4x smaller
    assert m["accuracy_before"] > 85                  # a really trained model
    assert abs(m["accuracy_drop_pp"]) < 3.0
    assert m["speedup_ci95"][0] <= m["speedup"] <= m["speedup_ci95"][1]
    # peak memory vs base, both artifacts in this run: the base was gated in this run, so its
    # fresh-process measurement is the one reused (the same number), as is the head's
    b = result["baseline"]
    assert b["source"] == "computed"
    assert b["metrics"]["peak_memory_mb_same_run"] == b["metrics"]["peak_memory_mb"] > 0
    assert b["delta"]["memory_growth_pct_vs_base"] == pytest.approx(
        (m["peak_memory_mb"] / b["metrics"]["peak_memory_mb"] - 1) * 100)
    # exit code: a bad input in the run -> 2, and the verdict says error
    assert proc.returncode == 2, proc.stderr
    assert report["verdict"] == "error" and report["exit_code"] == 2
    assert "digits" in proc.stdout and "verdict: ERROR" in proc.stdout


def test_report_records_where_and_how_it_was_measured(gated):
    _, _, report = gated
    assert report["schema_version"] == 1
    assert report["commits"]["base"] and report["commits"]["head"]
    for tool in ("edgegate", "onnx", "onnxruntime", "numpy", "python"):
        assert report["toolchain"][tool]
    good = next(m for m in report["models"] if m["path"] == "models/digits.onnx")
    assert len(good["sha256"]) == 64 and good["info"]["params"] > 1000
    assert good["info"]["op_counts"]["Conv"] >= 3
    assert good["data"]["calibration"]["samples"] == 200
    (result,) = good["results"]
    meas = result["measurement"]
    assert meas["runtime"] == "onnxruntime" and meas["threads"] >= 1 and meas["where"] == "host"
    q = result["quantization"]
    assert q["calibration_method"] == "minmax" and isinstance(q["per_channel"], bool)   # chosen by measurement
    assert q["activation_type"] in ("uint8", "int8")
    assert len(q["activation_type_candidates"]) == 2          # both measured, the faster shipped
    # the precision search may keep a layer in float (for accuracy or measured speed), with a reason
    kept = [k["node"] for k in q["kept_in_float"]]
    assert all(k["reason"] for k in q["kept_in_float"])
    assert q["compute_nodes_quantized"] + len(kept) == q["compute_nodes_total"] >= 6
    assert q["compute_nodes_quantized"] >= 3 and 0.5 <= q["int8_mac_share"] <= 1.0
    artifact = result["artifact"]
    assert artifact["precision"] == "int8" and artifact["path"] == "artifacts/digits-x86-cpu-int8.onnx"
    stored = onnx.load(str(gated[0] / ".edgegate-out" / artifact["path"]))
    assert any(n.op_type == "QuantizeLinear" for n in stored.graph.node)
    assert {c["limit"] for c in result["checks"]} >= {"max_accuracy_drop_pp", "min_speedup", "min_size_ratio"}
    for c in result["checks"]:
        assert c["source"].startswith("policies/x86-cpu.yml:")


def test_comment_renders_and_check_and_render_redo_it(gated, tmp_path):
    repo, _, report = gated
    comment = (repo / ".edgegate-out/comment.md").read_text()
    assert comment.startswith("<!-- edgegate:comment -->")
    assert "models/digits.onnx" in comment and "models/broken.onnx" in comment
    assert "<details>" in comment and "INT8 coverage" in comment
    rendered = edgegate("render", ".edgegate-out/report.json", cwd=repo)
    assert rendered.returncode == 0 and rendered.stdout == comment
    summary = edgegate("render", ".edgegate-out/report.json", "--format", "summary", cwd=repo)
    assert summary.stdout == (repo / ".edgegate-out/summary.md").read_text()
    # a stricter policy re-checked from report.json alone: the good model now fails its gate
    strict = tmp_path / "strict.yml"
    strict.write_text("version: 1\ndevices:\n  x86-cpu:\n    min_size_ratio: 100\n")
    checked = edgegate("check", ".edgegate-out/report.json", "--policy", str(strict), "--json", cwd=repo)
    out = json.loads(checked.stdout)
    assert out["verdict"] == "error"                 # the broken model still errors
    assert checked.returncode == 2
    # and without the broken model in the report, the failed gate gives exit 1
    data = json.loads((repo / ".edgegate-out/report.json").read_text())
    data["models"] = [m for m in data["models"] if m["path"] == "models/digits.onnx"]
    only_good = tmp_path / "report.json"
    only_good.write_text(json.dumps(data))
    checked = edgegate("check", str(only_good), "--policy", str(strict), cwd=tmp_path)
    assert checked.returncode == 1 and "min_size_ratio" in checked.stdout and "strict.yml:4" in checked.stdout


def test_unknown_device_ends_the_run_with_a_config_error(model_repo):
    perturbed_copy(model_repo / "models/digits.onnx", model_repo / "models/digits.onnx")
    commit_all(model_repo, "retrain")
    cfg = model_repo / "edgegate.yml"
    cfg.write_text(cfg.read_text().replace("[x86-cpu]", "[x86-cpu, toaster]"))
    proc = edgegate("run", "--base", "HEAD~1", cwd=model_repo)
    assert proc.returncode == 2
    report = json.loads((model_repo / ".edgegate-out/report.json").read_text())
    (err,) = report["errors"]
    assert "toaster" in err["message"] and err["file"] == "edgegate.yml" and err["line"] == 9
    assert (model_repo / ".edgegate-out/comment.md").read_text().count("toaster") >= 1


def test_no_changed_model_passes_quickly(model_repo):
    (model_repo / "notes.txt").write_text("docs only")
    commit_all(model_repo, "docs")
    proc = edgegate("run", "--base", "HEAD~1", "--json", cwd=model_repo)
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert out["verdict"] == "passed" and out["models"] == []
    report = json.loads((model_repo / ".edgegate-out/report.json").read_text())
    assert report["unchanged"] == ["models/digits.onnx"]


def test_model_inputs_not_matching_data_is_a_clear_error(model_repo, tmp_path):
    import numpy as np

    np.savez(model_repo / "data/calibration.npz", input=np.zeros((5, 1, 16, 16), np.float32))
    perturbed_copy(model_repo / "models/digits.onnx", model_repo / "models/digits.onnx")
    commit_all(model_repo, "bad data")
    proc = edgegate("run", "--base", "HEAD~1", "-q", cwd=model_repo)
    assert proc.returncode == 2
    report = json.loads((model_repo / ".edgegate-out/report.json").read_text())
    err = report["models"][0]["error"]
    assert err["file"] == "data/calibration.npz" and "shape" in err["message"]


def test_models_with_one_file_name_in_two_folders_keep_their_own_artifacts(model_repo):
    """a/good.onnx and b/good.onnx are named after their paths: no artifact overwrites another,
    and each report row's sha256 is its own file's."""
    import hashlib
    import shutil

    from conftest import CONFIG, perturbed_copy

    for folder, seed in (("a", 1), ("b", 2)):
        (model_repo / "models" / folder).mkdir()
        perturbed_copy(model_repo / "models/digits.onnx", model_repo / f"models/{folder}/good.onnx", seed)
    (model_repo / "models/digits.onnx").unlink()
    (model_repo / "edgegate.yml").write_text(CONFIG.replace("models/*.onnx", "models/*/good.onnx"))
    proc = edgegate("run", "models/a/good.onnx", "models/b/good.onnx", "--baseline", "off",
                    "--no-cache", cwd=model_repo)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads((model_repo / ".edgegate-out/report.json").read_text())
    names = {m["path"]: m["name"] for m in report["models"]}
    assert names == {"models/a/good.onnx": "models-a-good", "models/b/good.onnx": "models-b-good"}
    paths = set()
    for m in report["models"]:
        art = m["results"][0]["artifact"]
        paths.add(art["path"])
        data = (model_repo / ".edgegate-out" / art["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"]
    assert len(paths) == 2
    shutil.rmtree(model_repo / ".edgegate-out")
