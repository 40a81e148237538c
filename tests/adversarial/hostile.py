"""Builders of hostile and broken inputs: each writes a real file that a pull request could hold.

Nothing here is faked: the pickle payload really creates its marker file when unpickled, the
zip bombs really inflate to the size they declare, the ONNX graphs really hang or allocate.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Payload:
    """Unpickling this creates ``marker``: the stand-in for a command a pull request smuggles in."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def random_bytes(path: Path, size: int = 4096, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def truncated(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _io(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def onnx_cycle(path: Path) -> Path:
    """a -> Add -> b -> Add -> a: the graph is not a DAG."""
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Add", ["a", "x"], ["b"], name="second")]
    return _save(helper.make_graph(nodes, "cycle", [_io("x", [1, 4])], [_io("b", [1, 4])]), path)


def onnx_missing_initializer(path: Path) -> Path:
    """MatMul reads a weight 'W' that is neither an input nor an initializer."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    return _save(helper.make_graph(nodes, "missing", [_io("x", [1, 4])], [_io("y", [1, 4])]), path)


def onnx_absurd_dims(path: Path) -> Path:
    """An initializer that declares 1e12 float elements but carries 16 bytes."""
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[1_000_000, 1_000_000],
                         raw_data=b"\0" * 16)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "absurd", [_io("x", [1, 1_000_000])],
                              [_io("y", [1, 1_000_000])], initializer=[weight])
    return _save(graph, path)


def onnx_external(path: Path, location: str) -> Path:
    """An initializer whose data lives in an external file at ``location``."""
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 4],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "external", [_io("x", [1, 4])], [_io("y", [1, 4])],
                              initializer=[weight])
    return _save(graph, path)


def onnx_nonfinite(src: Path, dst: Path, value: float) -> tuple[Path, str]:
    """A copy of a trained model with one weight set to ``value`` (NaN or Inf)."""
    model = onnx.load(str(src))
    init = next(i for i in model.graph.initializer
                if numpy_helper.to_array(i).dtype == np.float32 and numpy_helper.to_array(i).size > 16)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[3] = value
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst, init.name


def onnx_hang(path: Path) -> Path:
    """A Loop of 2**62 iterations that each do real work: runs for ever."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Sin", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _io("v_in", [1, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _io("v_out", [1, 4])])
    nodes = [
        helper.make_node("Constant", [], ["trip"], value=numpy_helper.from_array(np.array(2 ** 62, np.int64))),
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("Loop", ["trip", "cond", "x"], ["y"], body=body, name="forever"),
    ]
    return _save(helper.make_graph(nodes, "hang", [_io("x", [1, 4])], [_io("y", [1, 4])]), path)


def onnx_memory_hog(path: Path, gib: int = 8) -> Path:
    """A few hundred bytes that ask for ``gib`` GiB at run time (Expand of the input)."""
    side = int((gib * (1 << 30) / 4) ** 0.5)
    nodes = [
        helper.make_node("Constant", [], ["shape"],
                         value=numpy_helper.from_array(np.array([side, side], np.int64))),
        helper.make_node("Expand", ["x", "shape"], ["big"], name="expand"),
        helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0, name="sum"),
    ]
    return _save(helper.make_graph(nodes, "hog", [_io("x", [1, 1])], [_io("y", [])]), path)


def raw_pickle(path: Path, marker: Path) -> Path:
    """A legacy (non-zip) torch.save file: a bare pickle whose loading runs the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weight": [0.0], "extra": Payload(marker)}, protocol=2))
    return path


def torch_pickle(path: Path, marker: Path) -> Path:
    """A torch.save zip archive whose data.pkl holds the payload beside a real tensor."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "extra": Payload(marker)}, path)
    return path


def zip_bomb(path: Path, members: dict[str, bytes], bomb_member: str, gib: float = 1.0) -> Path:
    """A zip whose ``bomb_member`` really inflates to ``gib`` GiB of zeros (a few MB on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        with zf.open(bomb_member, "w", force_zip64=True) as fh:
            for _ in range(int(gib * 1024)):
                fh.write(chunk)
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def keras_lambda(path: Path) -> Path:
    import keras

    model = keras.Sequential([keras.Input((8, 8, 1), name="input"),
                              keras.layers.Lambda(lambda v: v * 2.0), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def savedmodel_custom_op(folder: Path, op: str = "EdgeGateNoSuchOp") -> Path:
    """A real SavedModel whose graph calls an op type no TensorFlow build registers."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
        def __call__(self, x):
            return {"output": tf.math.sin(x) * 2.0}

    module = Tiny()
    tf.saved_model.save(module, str(folder), signatures=module.__call__)
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    renamed = 0
    for meta in proto.meta_graphs:
        for fn in meta.graph_def.library.function:
            for node in fn.node_def:
                if node.op == "Sin":
                    node.op = op
                    renamed += 1
    assert renamed, "the SavedModel has no Sin node to rename"
    (folder / "saved_model.pb").write_bytes(proto.SerializeToString())
    return folder


def snapshot(folder: Path, skip: Path | None = None) -> set[str]:
    """Every path under ``folder`` (except under ``skip``), to prove nothing was created there."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if skip is not None and (here == skip or skip in here.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            out.add(str((here / name).relative_to(folder)))
    return out


def onnx_classifier(path: Path, features: int = 4, classes: int = 3, seed: int = 0,
                    image: tuple[int, int, int] | None = None) -> tuple[Path, np.ndarray]:
    """A real tiny linear classifier (inputs [batch, features], or [batch, C, H, W] for
    ``image``) and its weight, so data can be labelled by what the model computes."""
    rng = np.random.default_rng(seed)
    if image:
        features = int(np.prod(image))
    weight = rng.standard_normal((features, classes)).astype(np.float32)
    nodes, x = [], "input"
    if image:
        nodes.append(helper.make_node("Flatten", ["input"], ["flat"], axis=1, name="flatten"))
        x = "flat"
    nodes.append(helper.make_node("MatMul", [x, "W"], ["logits"], name="fc"))
    graph = helper.make_graph(nodes, "tiny", [_io("input", ["batch", *(image or (features,))])],
                              [_io("logits", ["batch", classes])],
                              initializer=[numpy_helper.from_array(weight, "W")])
    return _save(graph, path), weight


def onnx_if_external(path: Path, location: str) -> Path:
    """An If whose then-branch holds an initializer with external data at ``location``: the
    location hides in a subgraph, not in the main graph's initializers."""
    hidden = TensorProto(name="W_then", data_type=TensorProto.FLOAT, dims=[4, 4],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = hidden.external_data.add()
        entry.key, entry.value = key, value
    w4 = [helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4])]
    then_branch = helper.make_graph([helper.make_node("Identity", ["W_then"], ["w"])], "then", [],
                                    w4, initializer=[hidden])
    else_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["w"],
                          value=numpy_helper.from_array(np.eye(4, dtype=np.float32)))],
        "else", [], w4)
    nodes = [helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True))),
             helper.make_node("If", ["cond"], ["weight"], then_branch=then_branch,
                              else_branch=else_branch, name="branch"),
             helper.make_node("MatMul", ["x", "weight"], ["y"], name="mm")]
    return _save(helper.make_graph(nodes, "if_external", [_io("x", [1, 4])], [_io("y", [1, 4])]),
                 path)


def onnx_custom_op(path: Path, op: str = "EdgeGateNoSuchOp", domain: str = "com.hostile") -> Path:
    """A valid ONNX graph whose one node is an op of a custom domain no runtime provides."""
    nodes = [helper.make_node(op, ["x"], ["y"], domain=domain, name="custom")]
    model = helper.make_model(helper.make_graph(nodes, "custom", [_io("x", [1, 4])], [_io("y", [1, 4])]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def npz_huge_header(path: Path, name: str = "input", declared_bytes: int = 2 << 50,
                    others: dict[str, np.ndarray] | None = None) -> Path:
    """An .npz whose ``name`` member's .npy header declares ``declared_bytes`` (2 PiB) of float32
    while the member holds 64 bytes: numpy would try to allocate all of it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (declared_bytes // 4,)})
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}.npy", buffer.getvalue() + b"\0" * 64)
        for other, array in (others or {}).items():
            zf.writestr(f"{other}.npy", npy_bytes(array))
    return path


def onnx_tiny(path: Path, seed: int = 0) -> Path:
    """x [1, 4] -> MatMul (4x3 weights) -> Relu -> y [1, 3]: a real model that gates in seconds."""
    weight = numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal((4, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    return _save(helper.make_graph(nodes, "tiny", [_io("x", [1, 4])], [_io("y", [1, 3])],
                                   initializer=[weight]), path)


def tiny_data(path: Path, samples: int = 64, seed: int = 0) -> Path:
    """Inputs 'x' for onnx_tiny and integer labels (0..2)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=rng.standard_normal((samples, 1, 4)).astype(np.float32),
             labels=rng.integers(0, 3, samples))
    return path


WORKFLOW_COMMANDS = {"error", "warning", "notice", "debug", "group", "endgroup", "add-mask",
                     "set-output", "save-state", "set-env", "add-path", "echo", "stop-commands",
                     "add-matcher", "remove-matcher", "stop-commands"}


def workflow_commands(text: str) -> list[tuple[str, str]]:
    """The workflow commands the GitHub Actions runner would run from this output, as its parser
    reads it (actions/runner ActionCommand.TryParseV2 / TryParse): lines split on \\n, \\r\\n and
    a lone \\r; '::name props::data' after leading whitespace; '##[name ...]' anywhere;
    '::stop-commands::TOKEN' suspends everything until a line '::TOKEN::'."""
    import re

    found: list[tuple[str, str]] = []
    token = None
    for line in re.split(r"\r\n|\r|\n", text):
        if token is not None:
            if line.strip() == f"::{token}::":
                token = None
            continue
        s = line.lstrip()
        if s.startswith("::") and s.find("::", 2) > 0:
            end = s.find("::", 2)
            info = s[2:end]
            name = info.split(" ", 1)[0]
            if name in WORKFLOW_COMMANDS:
                found.append((name, s))
                if name == "stop-commands":
                    token = s[end + 2:]
                continue
        at = line.find("##[")
        if at >= 0 and "]" in line[at:]:
            name = line[at + 3:line.index("]", at)].split(" ", 1)[0]
            if name in WORKFLOW_COMMANDS:
                found.append((name, line))
    return found
