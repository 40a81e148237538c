"""Issue 18, item 6: a pull request cannot loosen how a model is gated without touching a limit:
moving the model onto a new device profile with no limits, taking it off a device, changing its
declared task, or un-configuring it; nor by pointing a device at another runtime."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import commit_all
from edgegate.config.load import ResolvedDevice
from edgegate.config.policy_schema import DeviceProfile
from edgegate.config.schema import Config
from edgegate.policy.integrity import diff_limits, model_changes, with_base_entry


def config(**model) -> Config:
    return Config.model_validate({"version": 1, "models": [{"path": "models/*.onnx", **model}]})


def changes(base: Config, head: Config, models=None, allowed=False):
    return model_changes(base, head, models or {"models/a.onnx": "models/a.onnx"}, allowed,
                         "edgegate.yml", "@abc1234")


def test_a_model_moved_to_a_new_device_is_a_loosening_and_refused():
    base, head = config(devices=["x86-cpu"]), config(devices=["lax-cpu"])
    (c,) = changes(base, head)
    assert (c.model, c.device, c.limit, c.change, c.allowed) == (
        "models/a.onnx", "x86-cpu", "devices", "loosened", False)
    assert "no longer gated on x86-cpu, now on lax-cpu" in c.source
    # refused: gated on the base commit's device as well as the new one
    spec = with_base_entry(head.models[0], head, base, "models/a.onnx")
    assert spec.devices == ["x86-cpu", "lax-cpu"]
    # adding a device is not a loosening; the base commit's allow_policy_changes allows a move
    assert changes(base, config(devices=["x86-cpu", "lax-cpu"])) == []
    assert [c.allowed for c in changes(base, head, allowed=True)] == [True]


def test_the_default_devices_count_for_models_that_name_none():
    base = Config.model_validate({"version": 1, "models": [{"path": "models/*.onnx"}],
                                  "devices": ["x86-cpu", "raspberry-pi-4"]})
    head = base.model_copy(update={"devices": ["x86-cpu"]})
    (c,) = changes(base, head)
    assert (c.device, c.limit) == ("raspberry-pi-4", "devices")


def test_a_changed_task_and_an_unconfigured_model_are_loosenings():
    (task,) = changes(config(task="classification"), config(task="regression"))
    assert task.limit == "task" and "classification -> regression" in task.source
    spec = with_base_entry(config(task="regression").models[0], config(task="regression"),
                           config(task="classification"), "models/a.onnx")
    assert spec.task == "classification"
    gone = Config.model_validate({"version": 1, "models": [{"path": "other/*.onnx"}]})
    (c,) = changes(config(), gone)
    assert c.limit == "configured" and "not configured in this pull request" in c.source
    # a renamed model is compared with its entry at its old path
    assert changes(config(devices=["x86-cpu"]),
                   Config.model_validate({"version": 1, "models": [
                       {"path": "new/*.onnx", "devices": ["x86-cpu"]}]}),
                   {"new/a.onnx": "models/a.onnx"}) == []


def test_a_device_pointed_at_another_runtime_is_a_loosening():
    def device(target):
        return ResolvedDevice("x86-cpu", target, DeviceProfile(target=target), {}, ("policy.yml",))

    (c,) = diff_limits({"x86-cpu": device("onnxruntime")}, {"x86-cpu": device("coreml")}, False)
    assert (c.limit, c.change, c.allowed) == ("target", "loosened", False)
    assert "onnxruntime -> coreml" in c.source


POLICY = """version: 1
devices:
  x86-cpu:
    max_accuracy_drop_pp: 1.0
"""


def test_moving_a_model_onto_a_device_without_limits_fails_and_gates_it_on_the_old_one(model_repo,
                                                                                      tmp_path):
    cfg = (model_repo / "edgegate.yml").read_text()
    (model_repo / "edgegate.yml").write_text(
        cfg + "policy: policy.yml\nquantization:\n  search_time_s: 5\n")
    (model_repo / "policy.yml").write_text(POLICY)
    commit_all(model_repo, "limits on x86-cpu")
    (model_repo / "policy.yml").write_text(POLICY + "  lax-cpu:\n    target: onnxruntime\n")
    (model_repo / "edgegate.yml").write_text(
        (model_repo / "edgegate.yml").read_text().replace("devices: [x86-cpu]", "devices: [lax-cpu]"))
    commit_all(model_repo, "move the model to a device with no limits")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "--base", "HEAD~1",
                           "--no-cache", "--out", str(out)], cwd=model_repo, capture_output=True,
                          text=True, timeout=900)
    report = json.loads((out / "report.json").read_text())
    moved = [c for c in report["policy_changes"] if c["model"]]
    assert [(c["model"], c["device"], c["limit"], c["allowed"]) for c in moved] == [
        ("models/digits.onnx", "x86-cpu", "devices", False)], report["policy_changes"]
    assert report["verdict"] == "failed" and proc.returncode == 1, proc.stderr[-3000:]
    (model,) = report["models"]
    assert sorted(r["device"] for r in model["results"]) == ["lax-cpu", "x86-cpu"]
    comment = (out / "comment.md").read_text()
    assert "loosens policy limits" in comment and "no longer gated on x86-cpu" in comment
