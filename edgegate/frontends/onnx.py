"""ONNX models: loaded without running anything, checked, external data kept inside the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx

from edgegate.trust.paths import safe_path
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
    for tensor in _external_tensors(model):          # subgraphs (If / Loop / Scan bodies) included
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        what = f"external data of initializer '{tensor.name}'"
        if Path(location).is_absolute() or not location:
            raise UnsafeInputError(f"the {what} leads outside the repository", file=display,
                                   field="external_data.location", value=location,
                                   fix="keep external data files next to the model")
        # the path guard: inside the repository with links followed, a regular file (never a FIFO)
        target = safe_path(limit, base / location, what=what, field="external_data.location",
                           source=display, display=location)
        if target.is_dir():
            raise InputError(f"the {what} names a folder", file=display, value=location,
                             fix="point it at the .onnx.data file next to the model")
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
    """Every tensor stored as external data: the main graph's and every subgraph's (If branches,
    Loop and Scan bodies, at any depth), initializers, sparse initializers and tensor attributes."""
    for tensor in _graph_tensors(model.graph):
        if tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor


def _graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            yield from _attribute_tensors(attr)


def _attribute_tensors(attr: onnx.AttributeProto):
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    if attr.HasField("sparse_tensor"):
        yield attr.sparse_tensor.values
        yield attr.sparse_tensor.indices
    if attr.HasField("g"):
        yield from _graph_tensors(attr.g)
    for sub in attr.graphs:
        yield from _graph_tensors(sub)


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


# Op domains the runtimes EdgeGate drives implement: ONNX's own and ONNX Runtime's contrib ops.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft",
                 "com.microsoft.nchwc", "com.microsoft.experimental", "com.ms.internal.nhwc"}


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def check_domains(model: onnx.ModelProto, display: str) -> None:
    """An op of a custom domain (a custom-op library's) that no runtime here provides is the
    model's error, named with its domain, before any runtime is asked to load it."""
    local = {(f.domain, f.name) for f in model.functions}     # model-local functions are fine
    for node in _all_nodes(model.graph):
        if node.domain not in KNOWN_DOMAINS and (node.domain, node.op_type) not in local:
            raise InputError(f"node '{node.name or node.op_type}' is op '{node.op_type}' of the "
                             f"custom domain '{node.domain}', which no runtime EdgeGate gates on "
                             "provides (ONNX and ONNX Runtime ops only)", file=display,
                             value=f"{node.domain}:{node.op_type}",
                             fix="export the model with standard ONNX ops (decompose the custom "
                                 "op, or include it as a model-local ONNX function)")


def check(model: onnx.ModelProto, display: str) -> None:
    check_graph(model, display)
    check_domains(model, display)
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
