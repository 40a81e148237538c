"""The CLI's cheap commands work and exit with the documented codes."""

import subprocess
import sys

import pytest


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("init", "run", "check", "render", "targets"):
        assert command in proc.stdout


def test_targets_lists_every_target_with_a_state():
    proc = run_cli("targets")
    assert proc.returncode == 0
    for target in ("onnxruntime", "tflite", "coreml", "tensorrt"):
        assert target in proc.stdout
    assert "x86-cpu" in proc.stdout


def test_missing_config_is_exit_2_with_a_fix(tmp_path):
    proc = run_cli("run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "edgegate.yml" in proc.stderr and "Fix:" in proc.stderr


def test_python_dash_m_edgegate_is_the_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgegate", "run"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "no edgegate.yml in this folder or any folder above it" in proc.stderr
    assert "Fix: run 'edgegate init'" in proc.stderr
    assert subprocess.run([sys.executable, "-m", "edgegate", "--help"], capture_output=True,
                          text=True).stdout.count("Commands:") == 1


def test_a_subfolder_of_the_repository_uses_the_repositorys_edgegate_yml(tmp_path):
    import json

    from tinyrepo import tiny_repo

    repo = tiny_repo(tmp_path)
    below = repo / "src" / "deep"
    below.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "edgegate", "run", "--no-cache"], cwd=below,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert "config: ../../edgegate.yml" in proc.stderr                # says which one it used
    report = json.loads((repo / ".edgegate-out/report.json").read_text())   # outputs at the root
    assert [m["path"] for m in report["models"]] == ["models/tiny.onnx"]
    assert "report:  ../../.edgegate-out/report.json" in proc.stdout
    assert not (repo / ".edgegate").exists()                          # the committed folder untouched


def test_a_subfolder_never_finds_an_edgegate_yml_outside_its_repository(tmp_path):
    from conftest import git

    (tmp_path / "edgegate.yml").write_text("version: 1\n")            # someone else's, above the repo
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    git(repo, "init", "-q")
    proc = subprocess.run([sys.executable, "-m", "edgegate", "run"], cwd=repo / "sub",
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no edgegate.yml" in proc.stderr, proc.stderr


@pytest.mark.slow          # two runs on the built-in benchmark and search budgets
def test_run_without_edgegate_yml_on_command_line_data_and_on_synthetic_data(tmp_path):
    import json

    import numpy as np

    from tinyrepo import tiny_onnx

    tiny_onnx(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((16, 16)).astype(np.float32))
    np.savez(tmp_path / "ev.npz", x=rng.standard_normal((40, 16)).astype(np.float32),
             y=rng.integers(0, 4, 40))
    fast = ["--no-cache", "--baseline", "off"]
    proc = subprocess.run([sys.executable, "-m", "edgegate", "run", "tiny.onnx", "--calibration",
                           "cal.npz", "--evaluation", "ev.npz", "--labels", "y", *fast],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr                     # a verdict, not an error
    assert "built-in defaults" in proc.stderr
    (model,) = json.loads((tmp_path / ".edgegate-out/report.json").read_text())["models"]
    (result,) = model["results"]
    assert model["error"] is None and result["status"] in ("passed", "failed")
    assert result["metrics"]["accuracy_before"] is not None                  # labelled accuracy
    assert "cal.npz" in json.dumps(model["data"]) and "ev.npz" in json.dumps(model["data"])

    proc = subprocess.run([sys.executable, "-m", "edgegate", "run", "tiny.onnx", "--synthetic",
                           "--out", "syn", *fast], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert "no accuracy is measured" in proc.stderr and "not representative" in proc.stdout
    (model,) = json.loads((tmp_path / "syn/report.json").read_text())["models"]
    (result,) = model["results"]
    assert model["error"] is None and result["metrics"]["accuracy_before"] is None   # none claimed
    assert "synthetic" in json.dumps(model["data"])

    proc = subprocess.run([sys.executable, "-m", "edgegate", "run", "tiny.onnx", "--synthetic",
                           "--calibration", "cal.npz"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "Fix: keep one of them" in proc.stderr
