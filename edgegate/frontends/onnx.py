"""ONNX models: loaded without running anything, checked, external data kept inside the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx

from edgegate.errors import InputError, UnsafeInputError
from edgegate.frontends import SourceModel

MAX_MODEL_BYTES = 8 << 30


def safe_load(path: Path, display: str, root: Path | None = None) -> onnx.ModelProto:
    """Parse an ONNX file; external data must sit beside the model, inside ``root``."""
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise InputError(f"the model is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit",
                         file=display, fix="raise the limit only for trusted repositories")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})",
                         file=display,
                         fix="re-export the model; check that the file is not truncated "
                             "or an un-fetched Git LFS pointer") from None
    if not model.graph.node and not model.graph.output:
        raise InputError("the file parses but holds no graph (empty or not an ONNX model)",
                         file=display, fix="re-export the model")
    base = path.parent.resolve()
    limit = (root or base).resolve()
    for tensor in _external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if Path(location).is_absolute() or (target != limit and limit not in target.parents):
            raise UnsafeInputError(
                f"initializer '{tensor.name}' points its external data outside the repository",
                file=display, value=location,
                fix="keep external data files next to the model")
        if not target.is_file():
            raise InputError(f"external data file for '{tensor.name}' is missing", file=display,
                             value=location, fix="commit the .onnx.data file next to the model")
    if any(True for _ in _external_tensors(model)):
        try:
            onnx.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise InputError(f"cannot read external data: {exc}", file=display,
                             fix="re-export the model with its data file") from None
    return model


def _external_tensors(model: onnx.ModelProto):
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and \
                    attr.t.data_location == onnx.TensorProto.EXTERNAL:
                yield attr.t


def check_graph(model: onnx.ModelProto, display: str) -> None:
    """Names a missing tensor or a cycle plainly (the checker only says 'not topologically sorted')."""
    graph = model.graph
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    producers: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            producers[out] = node.name or f"{node.op_type}_{i}"
    for i, node in enumerate(graph.node):
        for name in node.input:
            if name not in known and name not in producers:
                raise InputError(f"node '{node.name or f'{node.op_type}_{i}'}' ({node.op_type}) reads "
                                 f"'{name}', which no node, graph input or initializer provides "
                                 "(a missing initializer?)", file=display,
                                 fix="re-export the model with its weights")
    waiting = [sum(1 for x in set(n.input) if x not in known) for n in graph.node]
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for x in set(node.input):
            if x not in known:
                consumers.setdefault(x, []).append(i)
    queue = [i for i, w in enumerate(waiting) if w == 0]
    done = 0
    while queue:                                   # Kahn's algorithm: O(nodes + edges)
        i = queue.pop()
        done += 1
        for out in set(graph.node[i].output):
            for j in consumers.get(out, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    queue.append(j)
    if done < len(graph.node):
        names = ", ".join(sorted(n.name or n.op_type for n, w in zip(graph.node, waiting) if w)[:5])
        raise InputError(f"the graph has a cycle (nodes {names} wait on each other)",
                         file=display, fix="re-export the model; an ONNX graph must be acyclic")


# Ops whose constant inputs are learned weights: a non-finite value there is a diverged model.
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Gather",
              "BatchNormalization", "LayerNormalization", "InstanceNormalization", "Attention"}


def check_weights(model: onnx.ModelProto, display: str) -> None:
    """NaN anywhere, or ±Inf in a learned weight, makes quantization meaningless (scales become
    NaN): refuse, naming the tensor. ±Inf in any other constant is a legitimate fill value (an
    attention mask's -inf): allowed; quantize.float_only_nodes keeps the nodes touching it in
    float."""
    from onnx import numpy_helper

    weight_inputs = {x for n in model.graph.node if n.op_type in WEIGHT_OPS for x in n.input}
    tensors = [(t.name, t.name, t) for t in model.graph.initializer]
    tensors += [(n.name or n.output[0], n.output[0], a.t) for n in model.graph.node
                for a in n.attribute if a.type == onnx.AttributeProto.TENSOR and n.output]
    for name, produced, tensor in tensors:
        if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                    onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except Exception:        # inconsistent sizes are the checker's to report
            continue
        values = values.astype(np.float32, copy=False)
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        if produced not in weight_inputs and not np.isnan(values).any():
            continue                                  # a fill value, e.g. a mask's -inf
        kinds = [k for k, f in (("NaN", np.isnan), ("Inf", np.isinf)) if f(values[bad]).any()]
        raise InputError(f"weight '{name}' holds {int(bad.sum())} {' and '.join(kinds)} "
                         f"value(s) of {values.size}; quantizing them is meaningless",
                         file=display,
                         fix="retrain or re-export from a checkpoint without NaN/Inf "
                             "(check the loss for divergence)")


def check(model: onnx.ModelProto, display: str) -> None:
    check_graph(model, display)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise InputError(f"the ONNX model is invalid: {first}", file=display,
                         fix="re-export it; 'python -m onnx.checker' shows the full report") from None
    except ValueError:
        # a model over 2 GiB cannot be checked in memory; ONNX Runtime will validate it on load
        pass


def save(model: onnx.ModelProto, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > (1 << 31) - (1 << 20)
    onnx.save_model(model, str(out), save_as_external_data=large,
                    location=out.name + ".data" if large else None)
    return out


class OnnxFrontend:
    id = "onnx"

    def load(self, path: Path, display: str, spec, workdir: Path, root: Path) -> SourceModel:
        model = safe_load(path, display, root)
        check(model, display)
        out = workdir / "source.onnx"
        if any(True for _ in _external_tensors(onnx.load(str(path), load_external_data=False))):
            save(model, out)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
        return SourceModel(onnx_path=out, framework="onnx", framework_version=onnx.__version__,
                           export="onnx (as committed)", reference=None)
