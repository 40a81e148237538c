"""Core ML: the trained digits CNN converted to an ML program, validated against the source, sized.

On Linux prediction is not available: the target says so instead of inventing numbers. On macOS the
same runner predicts (that test runs only there)."""

from __future__ import annotations

import platform
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

pytest.importorskip("coremltools", reason="the coreml extra (coremltools) is not installed")


def make_job(folder: Path, workdir: Path, device_fields: dict, source=None):
    from edgegate.config.load import ResolvedDevice
    from edgegate.config.policy_schema import DeviceProfile
    from edgegate.config.schema import BenchmarkSpec, QuantizationSpec
    from edgegate.data.sources import Dataset
    from edgegate.stages.analyze import analyze
    from edgegate.targets.base import CompileJob

    model_path = folder / "digits.onnx"
    cal = np.load(folder / "data" / "calibration.npz")["input"][:50]
    ev = np.load(folder / "data" / "evaluation.npz")
    workdir.mkdir(parents=True, exist_ok=True)
    profile = DeviceProfile(target="coreml", **device_fields)
    return CompileJob(model_path=model_path, source_path=model_path,
                      info=analyze(onnx.load(str(model_path))),
                      calibration=Dataset({"input": cal}, None),
                      evaluation=Dataset({"input": ev["input"]}, ev["labels"]),
                      device=ResolvedDevice("iphone", "coreml", profile),
                      quantization=QuantizationSpec(), benchmark=BenchmarkSpec(),
                      workdir=workdir, display="models/digits.onnx", name="digits", source=source)


def mlpackage_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def from_onnx(tmp_path_factory, digits_onnx_cached):
    from edgegate.targets.coreml import CoreMLTarget

    work = tmp_path_factory.mktemp("coreml") / "model"
    target = CoreMLTarget()
    compiled = target.compile(make_job(digits_onnx_cached, work / "iphone", {"precision": "fp16"}))
    return target, compiled, work


def test_onnx_source_converts_to_a_validated_ml_program(from_onnx, digits_onnx_cached):
    import coremltools as ct

    target, compiled, _ = from_onnx
    assert compiled.format == "mlpackage" and compiled.artifact.suffix == ".mlpackage"
    spec = ct.utils.load_spec(str(compiled.artifact))       # independent check of the saved file
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,) = spec.description.input
    assert list(inp.type.multiArrayType.shape) == [1, 32, 32, 1]     # channels-last, batch 1
    (out,) = spec.description.output
    assert list(out.type.multiArrayType.shape) == [1, 10]
    v = compiled.quantization["validation"]
    assert v["inputs"] == 1 and v["outputs"] == 1 and "conv" in v["op_types"]
    assert any("channels-last" in n for n in compiled.notes)
    # FP16 weights: about half of the FP32 ONNX model
    onnx_bytes = (digits_onnx_cached / "digits.onnx").stat().st_size
    assert 1.5 < onnx_bytes / mlpackage_bytes(compiled.artifact) < 2.5


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Core ML predicts")
def test_on_linux_latency_and_accuracy_are_not_measurable(from_onnx):
    from edgegate.errors import InputError

    target, compiled, _ = from_onnx
    assert compiled.measurable is False and "macOS" in compiled.not_measurable_reason
    assert compiled.baseline is None
    with pytest.raises(InputError, match="macOS"):
        target.runner(compiled.artifact)


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
def test_on_macos_the_same_runner_predicts(from_onnx, digits_onnx_cached):
    target, compiled, _ = from_onnx
    ev = np.load(digits_onnx_cached / "data" / "evaluation.npz")
    # a fresh target, as `edgegate measure` on a macOS runner has: the binding comes from the report
    runner = type(target)().runner(compiled.artifact, binding=compiled.input_binding)
    pred = [runner.infer({"input": ev["input"][i:i + 1]})[0].argmax() for i in range(100)]
    assert np.mean(np.array(pred) == ev["labels"][:100]) > 0.85


def test_weight_compression_shrinks_the_package(from_onnx, digits_onnx_cached):
    from edgegate.targets.coreml import CoreMLTarget

    _, fp16, work = from_onnx
    sizes = {}
    for mode in ("int8", "palettize-4bit"):
        job = make_job(digits_onnx_cached, work / mode, {"precision": "fp16", "weight_compression": mode})
        compiled = CoreMLTarget().compile(job)        # reuses the cached onnx2tf SavedModel
        assert compiled.quantization["weight_compression"] == mode
        sizes[mode] = mlpackage_bytes(compiled.artifact)
    base = mlpackage_bytes(fp16.artifact)
    assert sizes["int8"] < 0.7 * base
    assert sizes["palettize-4bit"] < sizes["int8"]


def test_pytorch_source_converts_directly(tmp_path, digits_onnx_cached, digits_torch):
    """A SourceModel carrying the torch module converts via torch.export (NCHW kept)."""
    import coremltools as ct

    from edgegate.targets.coreml import CoreMLTarget

    source = SimpleNamespace(module=digits_torch[0], details={})
    compiled = CoreMLTarget().compile(make_job(digits_onnx_cached, tmp_path / "w", {}, source))
    spec = ct.utils.load_spec(str(compiled.artifact))
    assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 1, 32, 32]
    assert "PyTorch source" in compiled.notes[0]
    assert not any("channels-last" in n for n in compiled.notes)
