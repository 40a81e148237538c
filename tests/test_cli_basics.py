"""The CLI's cheap commands work and exit with the documented codes."""

import subprocess
import sys


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
