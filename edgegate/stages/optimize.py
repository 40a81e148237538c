"""Graph optimization before quantization: shape inference plus ONNX Runtime's basic fusions."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgegate.errors import ConversionError


# A model file larger than this cannot be held in one protobuf: it needs external data.
PROTO_LIMIT = (1 << 31) - (1 << 24)


@contextlib.contextmanager
def _scratch_cwd(folder: Path):
    """Run in ``folder``: ONNX Runtime's symbolic shape inference saves its partial model as
    ./sym_shape_infer_temp.onnx (plus external data) when it cannot finish, which would land in
    the user's repository."""
    before = os.getcwd()
    scratch = Path(tempfile.mkdtemp(prefix="shape-infer-", dir=folder))
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(before)
        shutil.rmtree(scratch, ignore_errors=True)


def optimize(src: Path, dst: Path, display: str) -> tuple[Path, list[str]]:
    """ONNX Runtime's quantization pre-processing (symbolic shape inference, constant folding,
    Conv+BN fusion, ONNX shape inference). Falls back step by step for models it cannot handle
    (dynamic shapes, control flow) and says which steps were skipped."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes: list[str] = []
    widened, note = widen_float16(src, dst.with_name(dst.stem + "-fp32.onnx"))
    if note:
        notes.append(note)
    src = widened or src
    upgraded, note = upgrade_opset(src, dst.with_name(dst.stem + "-opset.onnx"))
    if note:
        notes.append(note)
    src = upgraded or src
    folded, fold_notes = fold_constants(src, dst.with_name(dst.stem + "-folded.onnx"))
    notes.extend(fold_notes)
    src = folded or src
    attempts = [
        ({}, None),
        ({"skip_symbolic_shape": True}, "symbolic shape inference failed; skipped it"),
        ({"skip_symbolic_shape": True, "skip_optimization": True},
         "graph optimization failed; quantizing the graph as exported"),
    ]
    last: Exception | None = None
    large = src.stat().st_size > PROTO_LIMIT
    for kwargs, note in attempts:
        try:
            logging.getLogger().setLevel(logging.ERROR)
            src_abs, dst_abs = str(src.resolve()), str(dst.resolve())   # before the cwd moves
            with _scratch_cwd(dst.parent):   # ORT drops sym_shape_infer_temp.onnx in the cwd
                quant_pre_process(src_abs, dst_abs, save_as_external_data=large,
                                  all_tensors_to_one_file=True, **kwargs)
            onnx.checker.check_model(str(dst))
            if note:
                notes.append(note)
            return dst, notes
        except Exception as exc:  # each toolchain step raises its own types
            last = exc
            continue
    raise ConversionError(f"ONNX graph optimization failed: {type(last).__name__}: {str(last)[:300]}",
                          file=display, fix="check that the model runs in ONNX Runtime as committed")


# ORT_ENABLE_ALL (and ORT_ENABLE_LAYOUT) save NCHWc layout ops (com.microsoft.nchwc Conv, Reorder*)
# chosen for the vector width of the machine that optimized the model: not a portable artifact.
# ORT_ENABLE_EXTENDED saves portable fusions (FusedConv, FusedGemm, attention, LayerNorm...).
OFFLINE_LEVEL = "ORT_ENABLE_EXTENDED"
OFFLINE_CHECK_SAMPLES = 64


def optimize_offline(src: Path, dst: Path, threads: int | None = None, display: str = "",
                     samples=()) -> tuple[Path, str | None]:
    """The FP32 model as ONNX Runtime optimizes it at ORT_ENABLE_EXTENDED, saved with
    ``SessionOptions.optimized_model_filepath``, then loaded in a fresh session and checked to
    reproduce the source's outputs (unoptimized, float tolerance: stages/faithful.py) on
    ``samples`` (a Dataset or feeds; at most OFFLINE_CHECK_SAMPLES are used). Returns
    (dst, None) when that holds; otherwise dst is a plain copy of the source and the note says
    why. Either way dst is an FP32 model that computes what the source computes."""
    import onnxruntime as ort

    from edgegate.stages.faithful import compare

    feeds = _feeds(samples)
    tmp = dst.with_name(dst.stem + "-ortopt" + dst.suffix)

    def plain(why: str) -> tuple[Path, str]:
        tmp.unlink(missing_ok=True)
        shutil.copyfile(src, dst)
        return dst, (f"offline ONNX Runtime optimization ({OFFLINE_LEVEL}) not used for "
                     f"{display or src.name}: {why}; the FP32 model is a plain copy of the source")

    if not feeds:
        return plain("no samples to check its outputs on")
    if src.stat().st_size > PROTO_LIMIT or src.with_name(src.name + ".data").exists():
        return plain("the model keeps its weights in external data")
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OFFLINE_LEVEL)
        opts.optimized_model_filepath = str(tmp)
        if threads:
            opts.intra_op_num_threads = threads
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
        if not tmp.is_file():
            return plain("ONNX Runtime wrote no optimized model")
        why = compare(src, tmp, feeds, threads, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    except Exception as exc:  # ORT raises its own types (saving, loading or running)
        return plain(f"{type(exc).__name__}: {str(exc)[:200]}")
    if why:
        return plain(f"the optimized graph does not reproduce the source's outputs ({why})")
    tmp.replace(dst)
    return dst, None


def _feeds(samples) -> list[dict]:
    if hasattr(samples, "feed"):            # a Dataset (the calibration contract)
        return [samples.feed(i) for i in range(min(len(samples), OFFLINE_CHECK_SAMPLES))]
    return list(samples)[:OFFLINE_CHECK_SAMPLES]


# QDQ per-channel (DequantizeLinear with an axis, int32 biases) needs opset 13. ONNX Runtime's
# quantizer only rewrites the opset number of an older model, which leaves ops whose meaning
# changed at 13 (Squeeze, Unsqueeze, Split, ReduceSum, Softmax...) invalid: convert them properly.
MIN_QDQ_OPSET = 13


def upgrade_opset(src: Path, dst: Path) -> tuple[Path | None, str | None]:
    """Convert a model below opset 13 with onnx's version converter, checked by loading it in
    ONNX Runtime. Returns (converted path or None, a note for the report)."""
    model = onnx.load(str(src), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= MIN_QDQ_OPSET or src.stat().st_size > PROTO_LIMIT:
        return None, None
    try:
        import onnxruntime as ort
        from onnx import version_converter

        converted = version_converter.convert_version(onnx.load(str(src)), MIN_QDQ_OPSET)
        onnx.checker.check_model(converted)
        onnx.save(converted, str(dst))
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception as exc:  # the converter and ORT raise their own types
        dst.unlink(missing_ok=True)
        return None, (f"opset {opset} could not be converted to {MIN_QDQ_OPSET} "
                      f"({type(exc).__name__}: {str(exc)[:200]}); INT8 QDQ needs opset "
                      f"{MIN_QDQ_OPSET}: re-export the model at opset {MIN_QDQ_OPSET} or newer")
    return dst, f"opset {opset} converted to {MIN_QDQ_OPSET} (INT8 QDQ needs opset {MIN_QDQ_OPSET})"


# Weights held in Constant nodes (Paddle, some exporters) are not initializers, and ONNX Runtime's
# quantizer only quantizes initializers as weights: without this, a model whose pre-processing
# fails ships with its Conv/MatMul weights in float and QDQ pairs on its activations only.
def fold_constants(src: Path, dst: Path) -> tuple[Path | None, list[str]]:
    """A copy whose main-graph Constant nodes are initializers of the same name (subgraphs may
    still read them from the outer scope, as before). Constant nodes inside If/Loop/Scan bodies
    stay where they are: they belong to that body's scope. Returns (path or None, notes)."""
    if src.stat().st_size > PROTO_LIMIT:
        return None, []
    model = onnx.load(str(src))
    graph = model.graph
    inner = sum(_constants_in_bodies(n) for n in graph.node)
    notes = [f"{inner} Constant nodes inside If/Loop/Scan bodies left there: ONNX Runtime's QDQ "
             "quantizer does not quantize subgraph bodies"] if inner else []
    outputs = {o.name for o in graph.output}
    keep, folded, params = [], 0, 0
    for node in graph.node:
        tensor = (_constant_tensor(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx")
                  and len(node.output) == 1 and node.output[0] not in outputs else None)
        if tensor is None or model.ir_version < 4:       # IR < 4: initializers must be inputs
            keep.append(node)
            continue
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        folded += 1
        params += int(np.prod(tensor.dims)) if tensor.dims else 1
    if not folded:
        return None, notes
    del graph.node[:]
    graph.node.extend(keep)
    try:
        import onnxruntime as ort

        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx and ORT raise their own types
        dst.unlink(missing_ok=True)
        return None, notes + [f"{folded} Constant nodes could not be folded into initializers "
                              f"({type(exc).__name__}: {str(exc)[:200]}); weights held in them "
                              "stay float"]
    return dst, notes + [f"folded {folded} Constant nodes ({params} parameters) into initializers "
                         "so they quantize"]


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    from onnx import helper

    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(a.t)
            return tensor
        if a.name == "value_float":
            return helper.make_tensor("", onnx.TensorProto.FLOAT, [], [a.f])
        if a.name == "value_floats":
            return helper.make_tensor("", onnx.TensorProto.FLOAT, [len(a.floats)], list(a.floats))
        if a.name == "value_int":
            return helper.make_tensor("", onnx.TensorProto.INT64, [], [a.i])
        if a.name == "value_ints":
            return helper.make_tensor("", onnx.TensorProto.INT64, [len(a.ints)], list(a.ints))
    return None                        # sparse_value, strings: left as Constant nodes


def _constants_in_bodies(node: onnx.NodeProto) -> int:
    count = 0
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                  list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
            for n in g.node:
                count += (n.op_type == "Constant") + _constants_in_bodies(n)
    return count


# Models shipped in half precision (exported with .half() for a GPU) are quantized from float32
# values: ONNX Runtime's quantizer and onnx2tf both expect float32 weights, and on a float16 graph
# they built a slower model (ORT) or a wrong one (onnx2tf: 9 % agreement on the digits CNN).
_HALF = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def widen_float16(src: Path, dst: Path) -> tuple[Path | None, str | None]:
    """A copy of a float16/bfloat16 model computing in float32: weights widened, casts to half
    made casts to float, value_info dropped (re-inferred). The inputs and outputs keep their
    types, converted at the boundary, so the model is fed and read exactly as the original."""
    if src.stat().st_size > PROTO_LIMIT:
        return None, None
    if not _has_half(onnx.load(str(src), load_external_data=False).graph):   # types only: cheap
        return None, None
    model = onnx.load(str(src))
    try:
        import onnxruntime as ort

        widened = _widen_graph(model.graph)
        _bind_io(model.graph)
        onnx.checker.check_model(model)
        onnx.save(model, str(dst))
        ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx and ORT raise their own types
        dst.unlink(missing_ok=True)
        return None, (f"the model holds float16 weights and could not be widened to float32 "
                      f"({type(exc).__name__}: {str(exc)[:200]}); it is quantized as it is: "
                      "export it in float32 for a reliable INT8 model")
    return dst, (f"float16 model: {widened} half-precision tensors widened to float32 before "
                 "quantization (inputs and outputs keep their types); size and speed are compared "
                 "with the float16 original")


def _has_half(graph: onnx.GraphProto) -> bool:
    if any(t.data_type in _HALF for t in graph.initializer):
        return True
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in _HALF:
                return True
            if a.type == onnx.AttributeProto.GRAPH and _has_half(a.g):
                return True
    return False


def _to_float(tensor: onnx.TensorProto) -> onnx.TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype("float32"), tensor.name)


def _widen_graph(graph: onnx.GraphProto) -> int:
    count = 0
    for i, t in enumerate(graph.initializer):
        if t.data_type in _HALF:
            graph.initializer[i].CopyFrom(_to_float(t))
            count += 1
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type in _HALF:
                a.t.CopyFrom(_to_float(a.t))
                count += 1
            elif a.type == onnx.AttributeProto.GRAPH:
                count += _widen_graph(a.g)
            elif a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT and a.i in _HALF:
                a.i = onnx.TensorProto.FLOAT            # Cast(to=float16), RandomNormal(dtype=...)
    del graph.value_info[:]          # re-inferred; the main graph's inputs/outputs: _bind_io
    return count


def _bind_io(graph: onnx.GraphProto) -> None:
    """Half-precision graph inputs are cast to float inside; outputs cast back to their type."""
    from onnx import helper

    head, tail = [], []
    for v, is_input in [(v, True) for v in graph.input] + [(v, False) for v in graph.output]:
        elem = v.type.tensor_type.elem_type
        if elem not in _HALF:
            continue
        inner = v.name + "_edgegate_fp32"
        for node in graph.node:                  # every use (and, for an output, its producer)
            for names in (node.input, node.output):
                for k, x in enumerate(names):
                    if x == v.name:
                        names[k] = inner
        cast = (helper.make_node("Cast", [v.name], [inner], to=onnx.TensorProto.FLOAT,
                                 name=v.name + "_edgegate_cast") if is_input else
                helper.make_node("Cast", [inner], [v.name], to=elem, name=v.name + "_edgegate_cast"))
        (head if is_input else tail).append(cast)
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
