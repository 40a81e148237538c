"""A git repository with a tiny ONNX model (MatMul + Relu, 16 -> 4) and its data, built in
milliseconds: for tests of what is gated and why, which never need a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import commit_all, git

TINY_CONFIG = """version: 1
models:
  - path: models/*.onnx
    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [x86-cpu]
policy: policy.yml
benchmark: {repeats: 5, min_time_s: 0, max_time_s: 1}
quantization: {search_time_s: 2}
"""
TINY_POLICY = "version: 1\ndevices:\n  x86-cpu:\n    max_accuracy_drop_pp: {drop}\n    min_speedup: 0.01\n"


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).standard_normal((16, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Relu", ["y0"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_data(repo: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (repo / "data").mkdir(exist_ok=True)
    np.savez(repo / "data/calibration.npz", x=rng.standard_normal((16, 16)).astype(np.float32))
    x = rng.standard_normal((40, 16)).astype(np.float32)
    np.savez(repo / "data/evaluation.npz", x=x, labels=rng.integers(0, 4, 40))


def tiny_repo(root: Path, drop: float = 1.0) -> Path:
    """One commit on main: models/tiny.onnx, its data, edgegate.yml and policy.yml."""
    repo = root / "tiny"
    tiny_onnx(repo / "models/tiny.onnx")
    write_data(repo)
    (repo / "edgegate.yml").write_text(TINY_CONFIG)
    (repo / "policy.yml").write_text(TINY_POLICY.format(drop=drop))
    (repo / ".gitignore").write_text(".edgegate-out/\n")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "first")
    return repo
