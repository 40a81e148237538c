"""PyTorch models in every supported format, gated end to end through the real CLI, and
malicious pickles refused without ever being unpickled."""

from __future__ import annotations

import inspect
import io
import json
import pathlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the pytorch extra")
pytest.importorskip("onnxscript", reason="needs the pytorch extra")

import digits  # noqa: E402  (examples/, put on sys.path by conftest)
from conftest import git  # noqa: E402

from edgegate.config.schema import ModelSpec  # noqa: E402
from edgegate.errors import ConfigError, UnsafeInputError  # noqa: E402
from edgegate.frontends.pytorch import PyTorchFrontend  # noqa: E402

pytestmark = pytest.mark.pytorch

INPUTS = "{input: {shape: [batch, 1, 32, 32], dtype: float32}}"
DATA = """    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [x86-cpu]
"""
CONFIG = f"""version: 1
models:
  - path: models/digits_script.pt
    inputs: {INPUTS}
{DATA}  - path: models/digits.pt2
{DATA}  - path: models/digits_weights.pt
    factory: "digits_factory:build"
    inputs: {INPUTS}
{DATA}  - path: models/digits_pickled.pt
    inputs: {INPUTS}
{DATA}benchmark: {{repeats: 10, min_time_s: 0.1, max_time_s: 2}}
quantization: {{search_samples: 100}}
"""


class Payload:
    """Unpickling this creates a file: the stand-in for code a pull request smuggles in."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def factory_source() -> str:
    return ("import torch.nn as nn\n\n\n" + inspect.getsource(digits.build_cnn)
            + "\n\ndef build():\n    return build_cnn(16)\n")


@pytest.fixture(scope="module")
def torch_repo(tmp_path_factory, digits_torch):
    """A repository with the trained digits CNN saved in every format, committed."""
    model, _ = digits_torch
    repo = tmp_path_factory.mktemp("torch") / "repo"
    (repo / "models").mkdir(parents=True)
    digits.write_data(repo / "data")
    example = torch.zeros(2, 1, digits.SIZE, digits.SIZE)
    torch.jit.save(torch.jit.trace(model, example), repo / "models/digits_script.pt")
    program = torch.export.export(model, (example,),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, repo / "models/digits.pt2")
    torch.save(model.state_dict(), repo / "models/digits_weights.pt")
    torch.save(model, repo / "models/digits_pickled.pt")
    (repo / "digits_factory.py").write_text(factory_source())
    (repo / "edgegate.yml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "models")
    return repo


@pytest.fixture(scope="module")
def gated(torch_repo):
    models = ["models/digits_script.pt", "models/digits.pt2", "models/digits_weights.pt",
              "models/digits_pickled.pt"]
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", *models],
                          cwd=torch_repo, capture_output=True, text=True, timeout=600)
    report_path = torch_repo / ".edgegate-out/report.json"
    assert report_path.is_file(), proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    return proc, {m["path"]: m for m in report["models"]}


@pytest.mark.slow
@pytest.mark.parametrize("path, export", [
    ("models/digits_script.pt", "torch.jit.load (TorchScript) -> torch.onnx (legacy"),
    ("models/digits.pt2", "torch.export.load (weights-only) -> torch.onnx (dynamo)"),
    ("models/digits_weights.pt", "torch.load(weights_only=True) + factory digits_factory:build"),
])
def test_every_format_is_gated_with_accuracy_from_pytorch(gated, digits_torch, path, export):
    _, models = gated
    report = models[path]
    assert report["status"] in ("passed", "failed"), report.get("error")
    assert report["framework"] == "pytorch"
    assert report["framework_version"] == torch.__version__
    assert report["export"].startswith(export)
    check = report["info"]["export_check"]
    assert check["check_data"]["max_abs_diff"] < check["check_data"]["tolerance"]
    assert check["check_random"]["max_abs_diff"] < 1e-3
    assert isinstance(report["info"]["inputs"][0]["shape"][0], str)   # a dynamic batch axis
    (result,) = report["results"]
    metrics = result["metrics"]
    # accuracy_before is PyTorch's own accuracy on the whole evaluation set (the test split)
    assert metrics["accuracy_before"] == pytest.approx(digits_torch[1], abs=1e-9)
    assert metrics["accuracy_after"] is not None and metrics["top1_agreement"] is not None


@pytest.mark.slow
def test_a_pickled_module_is_an_error_row_and_the_others_are_gated(gated):
    proc, models = gated
    refused = models["models/digits_pickled.pt"]
    assert refused["status"] == "error"
    assert refused["error"]["kind"] == "unsafe-input"
    assert "unpickling executes code" in refused["error"]["message"]
    assert "trust_pickle: true" in refused["error"]["fix"]
    assert sum(m["status"] != "error" for m in models.values()) == 3
    assert proc.returncode == 2, proc.stderr[-2000:]      # an error row: bad input


def _torch_zip_with(member_suffix: str, payload: bytes, src: Path, dst: Path) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = payload if item.filename.endswith(member_suffix) else zin.read(item.filename)
            zout.writestr(item, data)


def _pt2_with_constant(src: Path, dst: Path, config_name: str, member: str, payload: bytes,
                       use_pickle: bool = True) -> None:
    """A .pt2 whose constants config lists one more constant, stored under `member`."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("model_constants_config.json"):
                config = json.loads(data)
                config["config"]["evil"] = {"path_name": config_name, "is_param": False,
                                            "use_pickle": use_pickle, "tensor_meta": None}
                data = json.dumps(config).encode()
            zout.writestr(item, data)
        zout.writestr(f"{root}/data/constants/{member}", payload)


def test_malicious_pickles_are_refused_and_never_run(tmp_path, torch_repo):
    """Each payload really creates its file when unpickled; EdgeGate refuses each one unopened."""
    spec = ModelSpec(path="m", inputs={"input": {"shape": ["batch", 1, 32, 32]}},
                     factory="digits_factory:build")
    good_pt2 = torch_repo / "models/digits.pt2"
    cases = {}
    # 1. a torch.save zip whose data.pkl holds the payload next to real weights
    marker = tmp_path / "pwned-zip"
    torch.save({"weight": torch.zeros(2), "extra": Payload(marker)}, tmp_path / "evil.pt")
    cases["evil.pt"] = marker
    # 2. a plain pickle with a .pth name (the legacy torch.save format)
    marker = tmp_path / "pwned-raw"
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    cases["evil.pth"] = marker
    # 3-5. torch.export programs with an opaque object (pickle.loads), a custom object, and the
    # opaque object stored under a case-changed member name that PyTorch's reader still finds
    for name, config_name, member in (("opaque.pt2", "opaque_obj_0", "opaque_obj_0"),
                                      ("custom.pt2", "custom_obj_0", "custom_obj_0"),
                                      ("case.pt2", "opaque_obj_0", "OPAQUE_OBJ_0")):
        marker = tmp_path / f"pwned-{name}"
        _pt2_with_constant(good_pt2, tmp_path / name, config_name, member,
                           pickle.dumps(Payload(marker)))
        cases[name] = marker
    # 6. a tensor constant flagged as pickled (torch.load with weights_only=False)
    marker = tmp_path / "pwned-tensor.pt2"
    buffer = io.BytesIO()
    torch.save(Payload(marker), buffer)
    _pt2_with_constant(good_pt2, tmp_path / "tensor.pt2", "tensor_9", "tensor_9", buffer.getvalue())
    cases["tensor.pt2"] = marker

    for name, marker in cases.items():
        with pytest.raises(UnsafeInputError) as err:
            PyTorchFrontend().load(tmp_path / name, name, spec, tmp_path / "work", torch_repo)
        assert not marker.exists(), f"{name}: the payload ran"
        assert "trust_pickle" in err.value.fix

    # controls: a full unpickler does run each payload, so the refusals above are real
    torch.load(tmp_path / "evil.pt", weights_only=False)
    pickle.loads((tmp_path / "evil.pth").read_bytes())
    for name in ("opaque.pt2", "case.pt2", "tensor.pt2"):
        try:
            torch.export.load(tmp_path / name)
        except Exception:
            pass   # the payload runs while loading, before torch notices it is not a tensor
    assert all(marker.exists() for name, marker in cases.items() if name != "custom.pt2")


def test_a_pt2_program_loads_without_its_pickled_sample_inputs(tmp_path, torch_repo):
    """Sample inputs are always a pickle: EdgeGate never reads them, so a payload there never
    runs and the program still gates."""
    marker = tmp_path / "pwned-sample"
    buffer = io.BytesIO()
    torch.save(((Payload(marker),), {}), buffer)
    _torch_zip_with("data/sample_inputs/model.pt", buffer.getvalue(),
                    torch_repo / "models/digits.pt2", tmp_path / "evil.pt2")
    spec = ModelSpec(path="evil.pt2")
    source = PyTorchFrontend().load(tmp_path / "evil.pt2", "evil.pt2", spec, tmp_path / "work",
                                    torch_repo)
    assert not marker.exists(), "the sample-input payload ran"
    assert source.onnx_path.exists() and source.framework == "pytorch"
    try:
        torch.export.load(tmp_path / "evil.pt2")      # control: PyTorch's loader runs it
    except Exception:
        pass
    assert marker.exists()


def test_shapes_and_factory_are_required_where_the_file_lacks_them(tmp_path, torch_repo):
    frontend = PyTorchFrontend()
    with pytest.raises(ConfigError) as err:
        frontend.load(torch_repo / "models/digits_script.pt", "s.pt", ModelSpec(path="s.pt"),
                      tmp_path, torch_repo)
    assert err.value.field == "inputs" and "inputs:" in err.value.fix
    with pytest.raises(ConfigError) as err:
        frontend.load(torch_repo / "models/digits_weights.pt", "w.pt",
                      ModelSpec(path="w.pt", inputs={"input": {"shape": ["batch", 1, 32, 32]}}),
                      tmp_path, torch_repo)
    assert err.value.field == "factory"


def test_a_wrong_input_shape_is_reported_with_the_shape(tmp_path, torch_repo):
    from edgegate.errors import InputError

    spec = ModelSpec(path="s.pt", inputs={"input": {"shape": ["batch", 3, 7, 7]}})
    with pytest.raises(InputError) as err:
        PyTorchFrontend().load(torch_repo / "models/digits_script.pt", "s.pt", spec, tmp_path,
                               torch_repo)
    assert "declared shapes" in err.value.message and err.value.field == "inputs"
    assert np.array_equal(err.value.value["input"], ["batch", 3, 7, 7])


def test_a_trusted_repository_may_load_a_pickled_module(tmp_path, torch_repo, digits_torch):
    spec = ModelSpec(path="p.pt", trust_pickle=True,
                     inputs={"input": {"shape": ["batch", 1, 32, 32]}})
    source = PyTorchFrontend().load(torch_repo / "models/digits_pickled.pt", "p.pt", spec,
                                    tmp_path, torch_repo)
    assert source.export.startswith("torch.load (trusted full unpickling) -> torch.onnx")
    assert source.details["check_random"]["max_abs_diff"] < 1e-3
    x_test = digits.digits_data()[2][:5]
    with torch.no_grad():
        expected = digits_torch[0](torch.from_numpy(x_test)).numpy()
    got = np.concatenate([source.reference.infer({"input": x_test[i:i + 1]})[0] for i in range(5)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_an_unsupported_op_is_named_with_a_fix(tmp_path):
    from edgegate.errors import ConversionError

    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svdvals(x)

    torch.jit.save(torch.jit.trace(Spectrum(), torch.randn(2, 4, 4)), tmp_path / "svd.pt")
    spec = ModelSpec(path="svd.pt", inputs={"input": {"shape": ["batch", 4, 4]}})
    with pytest.raises(ConversionError) as err:
        PyTorchFrontend().load(tmp_path / "svd.pt", "svd.pt", spec, tmp_path / "work", tmp_path)
    assert "unsupported op aten::linalg_svdvals" in err.value.message
    assert "opset" in err.value.fix and "aten::linalg_svdvals" in err.value.fix
