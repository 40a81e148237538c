"""`edgegate init` in a repository of one's own: the files it writes load with EdgeGate's own
loaders, nothing is overwritten without --force, and the result gates a model with no edit."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from conftest import git

ROOT = Path(__file__).resolve().parent.parent
FILES = ("edgegate.yml", ".edgegate/policy.yml", ".github/workflows/edgegate.yml")


def edgegate(*args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def tiny_onnx(path: Path, input_name: str = "input") -> Path:
    """Reshape + Gemm: [batch, 1, 8, 8] -> [batch, 10]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "W"),
             numpy_helper.from_array(np.zeros(10, np.float32), "B"),
             numpy_helper.from_array(np.array([-1, 64], np.int64), "shape")]
    graph = helper.make_graph(
        [helper.make_node("Reshape", [input_name, "shape"], ["flat"]),
         helper.make_node("Gemm", ["flat", "W", "B"], ["logits"])], "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def new_repo(tmp_path: Path, *, data: bool = True) -> Path:
    repo = tmp_path / "repo"
    tiny_onnx(repo / "models" / "tiny.onnx")
    if data:
        rng = np.random.default_rng(1)
        x = rng.random((40, 1, 8, 8)).astype(np.float32)
        (repo / "data").mkdir()
        np.savez(repo / "data" / "calibration.npz", input=x[:20])
        np.savez(repo / "data" / "evaluation.npz", input=x[20:], labels=rng.integers(0, 10, 20))
    (repo / ".gitignore").write_text("build/\n")
    git(repo, "init", "-q", "-b", "main")
    return repo


def loaded(repo: Path):
    from edgegate.config.load import load_config, policy_stack, resolve_devices

    config = load_config(repo / "edgegate.yml")
    devices = resolve_devices(policy_stack(config))
    return config, devices


def test_init_writes_a_config_policy_workflow_and_gitignore_that_load(tmp_path):
    repo = new_repo(tmp_path)
    (repo / ".edgegate-out" / "artifacts").mkdir(parents=True)  # an earlier run's outputs
    tiny_onnx(repo / ".edgegate-out" / "artifacts" / "old.onnx")
    proc = edgegate("init", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    for name in FILES:
        assert (repo / name).is_file(), name
        assert f"wrote:   {name}" in proc.stdout
    assert "edgegate run models/tiny.onnx" in proc.stdout

    config, devices = loaded(repo)                # the project's own loader, policy found by it
    (spec,) = config.config.models               # outputs under .edgegate-out/ are not models
    assert spec.path == "models/tiny.onnx"
    assert spec.calibration == "data/calibration.npz"
    assert spec.evaluation.data == "data/evaluation.npz"
    assert (spec.evaluation.labels, spec.evaluation.metric) == ("labels", "top1")
    assert config.config.devices == ["x86-cpu"] and config.config.policy == ".edgegate/policy.yml"
    text = (repo / "edgegate.yml").read_text()
    assert "# inputs (read from the graph): input float32 [batch, 1, 8, 8]" in text
    # the policy stub changes no limit: the built-in ones hold until a line is uncommented
    from edgegate.config.load import builtin_profiles, resolve_devices

    builtin = resolve_devices(builtin_profiles())["x86-cpu"]
    assert {k: v.value for k, v in devices["x86-cpu"].limits.items()} == \
        {k: v.value for k, v in builtin.limits.items()}
    assert "# max_accuracy_drop_pp: 1 " in (repo / ".edgegate/policy.yml").read_text()

    written = (repo / ".github/workflows/edgegate.yml").read_text()
    example = (ROOT / "examples/workflows/edgegate.yml").read_text()
    assert written.endswith(example) and written.startswith("# Written by `edgegate init`")
    workflow = yaml.safe_load(written)
    assert workflow["jobs"]["gate"]["steps"][0]["with"]["fetch-depth"] == 0
    assert not (workflow.get("on", workflow.get(True))["pull_request"] or {}).get("paths")

    gitignore = (repo / ".gitignore").read_text()
    assert gitignore.startswith("build/\n") and "\n/.edgegate-out/\n" in gitignore
    ignored = subprocess.run(["git", "check-ignore", ".edgegate-out/report.json",
                              ".edgegate/policy.yml"],
                             cwd=repo, capture_output=True, text=True).stdout.split()
    assert ignored == [".edgegate-out/report.json"]      # outputs ignored, the policy committed


def test_a_second_init_overwrites_nothing_and_force_does(tmp_path):
    repo = new_repo(tmp_path)
    assert edgegate("init", cwd=repo).returncode == 0
    first = {name: (repo / name).read_text() for name in FILES}
    for name in FILES:
        (repo / name).write_text(first[name] + "# edited by hand\n")
    gitignore = (repo / ".gitignore").read_text()

    again = edgegate("init", cwd=repo)
    assert again.returncode == 0, again.stderr
    for name in FILES:
        assert f"skipped: {name} (exists; --force overwrites it)" in again.stdout
        assert (repo / name).read_text().endswith("# edited by hand\n")
    assert "wrote:" not in again.stdout
    assert (repo / ".gitignore").read_text() == gitignore          # not appended twice

    forced = edgegate("init", "--force", cwd=repo)
    assert forced.returncode == 0, forced.stderr
    for name in FILES:
        assert f"wrote:   {name}" in forced.stdout
        assert (repo / name).read_text() == first[name]
    assert (repo / ".gitignore").read_text() == gitignore          # only ever appended to


def test_a_model_without_data_calibrates_on_synthetic_inputs_and_says_what_to_create(tmp_path):
    from edgegate.data.sources import TensorSpec, prepare_data

    repo = new_repo(tmp_path, data=False)
    np.savez(repo / "wrong-shape.npz", input=np.zeros((5, 3, 4, 4), np.float32))   # does not fit
    proc = edgegate("init", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "no data files fit its inputs" in proc.stdout
    config, _ = loaded(repo)
    (spec,) = config.config.models
    assert spec.calibration_spec().synthetic is True and spec.evaluation is None
    text = (repo / "edgegate.yml").read_text()
    line = next(x for x in text.splitlines() if "#   calibration: data/tiny-calibration.npz" in x)
    assert line.endswith("# 'input' (samples, 1, 8, 8) float32")
    assert "#     data: data/tiny-evaluation.npz" in text
    # the synthetic option is the existing one: the data layer accepts it as written
    data = prepare_data(spec, [TensorSpec("input", ("batch", 1, 8, 8), "float32")], repo)
    assert data.calibration.info["source"] == "synthetic"


def test_data_named_after_the_inputs_and_other_label_names(tmp_path):
    repo = new_repo(tmp_path, data=False)
    rng = np.random.default_rng(0)
    (repo / "samples").mkdir()
    # a single-input model may use any array name; labels under another name
    np.savez(repo / "samples" / "tiny_test.npz", x=rng.random((12, 1, 8, 8), dtype=np.float32),
             y=rng.integers(0, 10, 12))
    assert edgegate("init", cwd=repo).returncode == 0
    config, _ = loaded(repo)
    (spec,) = config.config.models
    assert spec.calibration is None                    # drawn from the evaluation set
    assert (spec.evaluation.data, spec.evaluation.labels, spec.evaluation.metric) == \
        ("samples/tiny_test.npz", "y", "top1")
    from edgegate.data.sources import prepare_data
    from edgegate.stages.analyze import io_specs

    inputs, _ = io_specs(onnx.load(str(repo / "models/tiny.onnx")))
    data = prepare_data(spec, inputs, repo)          # the data layer reads what init chose
    assert len(data.evaluation) + len(data.calibration) == 12


def _zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_other_formats_say_what_to_fill_in(tmp_path):
    repo = new_repo(tmp_path, data=False)
    # PyTorch files are told apart by their zip layout (nothing is unpickled)
    _zip(repo / "models" / "scripted.pt", {"scripted/code/__torch__.py": b"", "scripted/constants.pkl": b"",
                                           "scripted/data.pkl": b""})
    _zip(repo / "models" / "weights.pth", {"weights/data.pkl": b"", "weights/version": b"3"})
    (repo / "models" / "vocab.bin").write_bytes(b"not a model")      # a .bin that is no model
    (repo / "models" / "net.keras").write_bytes(b"PK")
    (repo / "models" / "saved" / "variables").mkdir(parents=True)
    (repo / "models" / "saved" / "saved_model.pb").write_bytes(b"")
    proc = edgegate("init", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    config, _ = loaded(repo)
    assert [m.path for m in config.config.models] == [
        "models/net.keras", "models/saved", "models/scripted.pt", "models/tiny.onnx", "models/weights.pth"]
    text = (repo / "edgegate.yml").read_text()
    entry = text[text.index("path: models/scripted.pt"):text.index("path: models/tiny.onnx")]
    assert "TorchScript: the file does not carry its input shapes" in entry
    assert "#   input: {shape: [batch, 3, 224, 224], dtype: float32}" in entry
    assert 'pip install "edgegate-ci[pytorch]"' in entry
    entry = text[text.index("path: models/weights.pth"):]
    assert '# factory: "nets.model:build"' in entry
    assert 'pip install "edgegate-ci[tensorflow]"' in text
    assert "vocab.bin" not in text
    assert "models/scripted.pt: TorchScript" in proc.stdout


def test_no_models_still_writes_a_config_that_loads(tmp_path):
    repo = tmp_path / "empty"
    repo.mkdir()
    proc = edgegate("init", cwd=repo)                # not even a git repository
    assert proc.returncode == 0, proc.stderr
    assert "found 0 models" in proc.stdout
    assert "not a git repository" in proc.stdout and "no model files found" in proc.stdout
    config, _ = loaded(repo)
    assert config.config.models == []
    assert (repo / ".github/workflows/edgegate.yml").is_file()


def test_dir_argument_devices_and_an_unknown_device(tmp_path):
    repo = new_repo(tmp_path)
    proc = edgegate("init", str(repo), "--device", "x86-cpu", "--device", "raspberry-pi-4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"cd {repo} && edgegate run models/tiny.onnx" in proc.stdout
    config, devices = loaded(repo)
    assert config.config.devices == ["x86-cpu", "raspberry-pi-4"]
    policy = (repo / ".edgegate/policy.yml").read_text()
    assert "  raspberry-pi-4:\n    target: tflite" in policy

    bad = edgegate("init", "--device", "raspbery-pi-4", cwd=repo)
    assert bad.returncode == 2
    assert "unknown device 'raspbery-pi-4'" in bad.stderr and "did you mean 'raspberry-pi-4'" in bad.stderr
    assert "Fix:" in bad.stderr


def test_a_subfolder_of_a_repository_gets_no_workflow(tmp_path):
    repo = new_repo(tmp_path)
    sub = repo / "ml"
    tiny_onnx(sub / "net.onnx")
    proc = edgegate("init", "ml", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert (sub / "edgegate.yml").is_file() and not (sub / ".github").exists()
    assert "is not the top folder of its git repository" in proc.stdout
    config, _ = loaded(sub)
    assert [m.path for m in config.config.models] == ["net.onnx"]


@pytest.mark.slow
def test_init_then_run_ends_with_a_verdict_without_editing_anything(tmp_path, digits_onnx_cached):
    """The issue's bar: a repository holding one ONNX model and its data, `edgegate init`, then
    `edgegate run MODEL` gives a verdict (the digits CNN, trained on real labelled data)."""
    import shutil

    repo = tmp_path / "mine"
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    (repo / "models").mkdir()
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models" / "classifier.onnx")
    git(repo, "init", "-q", "-b", "main")
    assert edgegate("init", cwd=repo).returncode == 0
    proc = edgegate("run", "models/classifier.onnx", "--no-cache", cwd=repo, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads((repo / ".edgegate-out" / "report.json").read_text())
    assert report["verdict"] in ("passed", "failed")
    (result,) = report["models"][0]["results"]
    assert result["device"] == "x86-cpu" and result["status"] in ("passed", "failed")
    assert result["metrics"]["accuracy_drop_pp"] is not None        # labelled evaluation was used


def test_a_gitignore_that_hides_the_policy_is_pointed_out(tmp_path):
    repo = new_repo(tmp_path)
    (repo / ".gitignore").write_text("/.edgegate/")              # no newline at the end
    proc = edgegate("init", cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert (repo / ".gitignore").read_text().startswith("/.edgegate/\n\n# EdgeGate run outputs")
    assert "note: .gitignore ignores .edgegate/policy.yml, which is meant to be committed" in proc.stdout
