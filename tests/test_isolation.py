"""Each model × device runs in a child process: a segfault, a hang or a memory blow-up in a
toolchain becomes an error row with the reason, and the rest of the run carries on."""

from __future__ import annotations

import ctypes
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import commit_all, git
from edgegate.errors import ConversionError
from edgegate.trust.isolation import IsolationError, run_in_child

HERE = Path(__file__).resolve().parent


# --- functions run in the child (imported there by name) -----------------------------------

def child_ok(x):
    return {"doubled": x * 2}


def child_segfault():
    ctypes.string_at(0)                   # reads address 0: a real SIGSEGV


def child_hang():
    time.sleep(120)


def child_eats_memory():
    blocks = [np.ones(16 << 20) for _ in range(8)]     # 8 x 128 MB, touched
    time.sleep(30)
    return len(blocks)


def child_raises():
    raise ConversionError("no kernel for op X", file="m.onnx", fix="exclude it")


def child_bug():
    return {"ok": np.bool_(True)}["missing"]          # a plain exception, not an EdgeGateError


@pytest.fixture
def child_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(HERE))


def run(name, *args, timeout_s=60, memory_limit_mb=4096):
    return run_in_child(f"test_isolation:{name}", args, timeout_s=timeout_s,
                        memory_limit_mb=memory_limit_mb, what="probe")


def test_result_comes_back(child_path):
    assert run("child_ok", 21) == {"doubled": 42}


def test_segfault_becomes_an_error_with_the_reason(child_path):
    with pytest.raises(IsolationError, match="SIGSEGV: a segmentation fault"):
        run("child_segfault")


def test_hang_is_stopped_at_the_timeout(child_path):
    started = time.monotonic()
    with pytest.raises(IsolationError, match="timeout of 2 s"):
        run("child_hang", timeout_s=2)
    assert time.monotonic() - started < 30


def test_memory_cap_stops_the_child(child_path):
    with pytest.raises(IsolationError, match="memory cap of 400 MB"):
        run("child_eats_memory", memory_limit_mb=400)


def test_a_plain_exception_in_the_child_comes_back_as_an_isolation_error(child_path):
    # the child runs edgegate.trust.isolation as __main__: the error class it pickles must be
    # importable by the parent (once it was __main__.IsolationError, and unpickling failed)
    with pytest.raises(IsolationError, match="KeyError: 'missing'"):
        run("child_bug")


def test_edgegate_errors_keep_their_kind_and_fix(child_path):
    with pytest.raises(ConversionError) as info:
        run("child_raises")
    assert info.value.file == "m.onnx" and info.value.fix == "exclude it"


CONFIG = """version: 1
models:
  - path: models/digits.onnx
    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [too-slow, x86-cpu]
policy: policy.yml
benchmark: {repeats: 10, min_time_s: 0.1, max_time_s: 2}
"""

POLICY = """version: 1
devices:
  too-slow:
    target: onnxruntime
    timeout_s: 0.5
"""


def test_a_timed_out_device_is_an_error_row_and_the_run_goes_on(tmp_path, digits_onnx_cached):
    from edgegate.config.load import load_config
    from edgegate.progress import Progress
    from edgegate.gate.run import RunOptions, run_gate

    repo = tmp_path / "repo"
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    (repo / "edgegate.yml").write_text(CONFIG)
    (repo / "policy.yml").write_text(POLICY)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "config")
    (repo / "models").mkdir()
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models/digits.onnx")
    commit_all(repo, "model")
    run_gate(load_config(repo / "edgegate.yml"), RunOptions(models=[], base="HEAD~1"),
             repo / "out", Progress())
    report = json.loads((repo / "out/report.json").read_text())
    rows = {r["device"]: r for r in report["models"][0]["results"]}
    assert rows["too-slow"]["status"] == "error"
    assert "timeout of 0.5 s" in rows["too-slow"]["reason"]
    assert rows["too-slow"]["error"]["fix"]
    assert rows["x86-cpu"]["status"] in ("passed", "failed")
    assert rows["x86-cpu"]["metrics"]["accuracy_after"] is not None
    assert "too-slow" in (repo / "out/comment.md").read_text()
