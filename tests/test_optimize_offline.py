"""The offline-optimized FP32 floor: ONNX Runtime's ORT_ENABLE_EXTENDED graph, saved, reloaded
and checked to compute what the source computes; a plain copy (with the reason) otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from edgegate.data.sources import Dataset
from edgegate.stages.faithful import compare, mismatch
from edgegate.stages.floor import OPTIMIZED, fp32_floor
from edgegate.stages.optimize import optimize_offline


def test_the_digits_model_is_optimized_offline_and_faithful(digits_onnx, tmp_path):
    src = digits_onnx / "digits.onnx"
    cal = np.load(digits_onnx / "data" / "calibration.npz")["input"][:32]
    dst, note = optimize_offline(src, tmp_path / "floor.onnx", 2, "digits.onnx",
                                 Dataset({"input": cal}, None, {}))
    assert note is None and dst == tmp_path / "floor.onnx"
    model = onnx.load(str(dst))
    domains = {n.domain for n in model.graph.node}
    assert "com.microsoft" in domains                  # fusions applied (FusedConv/FusedGemm)
    assert "com.microsoft.nchwc" not in domains        # no layout-specific ops (that is ALL)
    x = np.load(digits_onnx / "data" / "evaluation.npz")["input"][:64]
    fresh = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    assert mismatch(ort.InferenceSession(str(src)).run(None, {"input": x}),
                    fresh.run(None, {"input": x})) is None


def test_without_samples_or_when_onnx_runtime_fails_it_is_a_plain_copy(digits_onnx, tmp_path):
    src = digits_onnx / "digits.onnx"
    dst, note = optimize_offline(src, tmp_path / "a.onnx", None, "digits.onnx", [])
    assert dst.read_bytes() == src.read_bytes() and "no samples" in note

    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.none")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    odd = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("example.none", 1)]),
              str(odd))
    dst, note = optimize_offline(odd, tmp_path / "b.onnx", None, "odd.onnx",
                                 [{"x": np.ones(2, np.float32)}])
    assert dst.read_bytes() == odd.read_bytes()
    assert note.startswith("offline ONNX Runtime optimization (ORT_ENABLE_EXTENDED) not used for "
                           "odd.onnx:") and "plain copy" in note
    assert not (tmp_path / "b-ortopt.onnx").exists()


def test_optimize_takes_paths_relative_to_the_cwd_and_leaves_the_cwd_alone(digits_onnx, tmp_path, monkeypatch):
    # ONNX Runtime's pre-processing runs in a scratch folder (its symbolic shape inference saves
    # sym_shape_infer_temp.onnx in the cwd when it cannot finish); relative paths still resolve.
    import shutil

    from edgegate.stages.optimize import optimize

    repo = tmp_path / "repo"
    (repo / "work").mkdir(parents=True)
    shutil.copy(digits_onnx / "digits.onnx", repo / "work" / "source.onnx")
    monkeypatch.chdir(repo)
    before = sorted(p.name for p in repo.iterdir())
    out, notes = optimize(Path("work/source.onnx"), Path("work/optimized.onnx"), "digits.onnx")
    assert out == Path("work/optimized.onnx") and out.is_file(), notes
    assert sorted(p.name for p in repo.iterdir()) == before
    assert not any(p.name.startswith("shape-infer-") for p in (repo / "work").iterdir())


def test_the_search_floor_is_optimize_offline(digits_onnx, tmp_path):
    """stages/floor.py names what optimize_offline wrote: the verified graph, or the plain copy
    with optimize_offline's reason."""
    src = digits_onnx / "digits.onnx"
    cal = np.load(digits_onnx / "data" / "calibration.npz")["input"][:8]
    dst, what = fp32_floor(src, tmp_path / "floor.onnx", Dataset({"input": cal}, None, {}), "d")
    assert what == OPTIMIZED == "the FP32 graph optimized offline by ONNX Runtime (ORT_ENABLE_EXTENDED)"
    assert "com.microsoft" in {n.domain for n in onnx.load(str(dst)).graph.node}

    dst, what = fp32_floor(src, tmp_path / "copy.onnx", [], "digits.onnx")
    assert dst.read_bytes() == src.read_bytes()
    assert what.startswith("the FP32 model as given (offline ONNX Runtime optimization "
                           "(ORT_ENABLE_EXTENDED) not used for digits.onnx: no samples")


def test_a_renamed_output_is_not_faithful(digits_onnx, tmp_path):
    src = digits_onnx / "digits.onnx"
    model = onnx.load(str(src))
    old = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["renamed" if o == old else o for o in node.output]
    model.graph.output[0].name = "renamed"
    other = tmp_path / "renamed.onnx"
    onnx.save(model, str(other))
    x = np.load(digits_onnx / "data" / "calibration.npz")["input"][:2]
    assert compare(src, other, [{"input": x}]) == f"outputs are named ['renamed'] instead of ['{old}']"
    assert compare(src, src, [{"input": x}]) is None
