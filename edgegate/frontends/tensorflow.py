"""TensorFlow / Keras models -> ONNX with tf2onnx, loaded safely.

Supported: SavedModel folders, .keras files and legacy .h5 files. Keras files load in Keras safe
mode (Lambda layers and unknown custom objects are refused) unless the model sets
``trust_custom_objects``. A SavedModel holds a graph, not Python; before loading it, its ops are
scanned and graphs that call back into Python or touch the file system are refused.

The ONNX export keeps the Keras layout (usually NHWC): data files follow the source model.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from edgegate._deps import require
from edgegate.errors import ConfigError, ConversionError, InputError, UnsafeInputError
from edgegate.frontends import SourceModel
from edgegate.frontends.export_check import (BATCH, InputDecl, check_export, declared_inputs,
                                             rename_outputs)
from edgegate.frontends.onnx import MAX_MODEL_BYTES
from edgegate.trust.zipbomb import check_zip

DEFAULT_OPSET = 17
# Graph ops that call back into Python or read / write files: refused in untrusted SavedModels.
UNSAFE_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc", "ReadFile", "WriteFile",
                        "MatchingFiles", "DeleteFile", "ImmutableConst", "LoadAndRemapMatrix",
                        "WholeFileReader", "WholeFileReaderV2", "TextLineReaderV2",
                        "FixedLengthRecordReaderV2", "TFRecordReaderV2", "Print", "PrintV2"})
ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
TRUST_FIX = ("if this repository is trusted, set 'trust_custom_objects: true' on the model in "
             "edgegate.yml; otherwise replace the layer with built-in Keras layers")


class TfReference:
    """The source model run by TensorFlow itself (its traced graph function)."""

    def __init__(self, fn, input_names: list[str]):
        self.fn = fn
        self.input_names = input_names

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.fn(*[feed[n] for n in self.input_names])
        return [np.asarray(t) for t in out]


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", extra="tensorflow")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scan_saved_model(path: Path, display: str) -> list[str]:
    """Op types of every graph and function in saved_model.pb, read without loading the model."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as exc:
        raise InputError(f"saved_model.pb cannot be parsed ({type(exc).__name__}: {_first_line(exc)})",
                         file=display, fix="re-export the SavedModel; check that the folder was "
                                           "committed whole (saved_model.pb and variables/)") from None
    if not proto.meta_graphs:
        raise InputError("saved_model.pb holds no graph", file=display, fix="re-export the SavedModel")
    ops: set[str] = set()
    for meta in proto.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return sorted(ops)


def _load_saved_model(path: Path, display: str, spec):
    tf = _tf()
    ops = scan_saved_model(path, display)
    unsafe = sorted(set(ops) & UNSAFE_OPS)
    if unsafe and not spec.trust_custom_objects:
        raise UnsafeInputError(f"the SavedModel's graph uses ops that read or write files or call "
                               f"back into Python: {', '.join(unsafe)}", file=display,
                               fix="export only the inference graph; if this repository is trusted, "
                                   "set 'trust_custom_objects: true' on the model in edgegate.yml")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise InputError(f"cannot load the SavedModel: {type(exc).__name__}: {_first_line(exc)}",
                         file=display, fix="re-export it (model.export(path) or "
                                           "tf.saved_model.save); commit the whole folder, "
                                           "variables/ included") from None
    names = list(loaded.signatures.keys())
    wanted = spec.signature or ("serving_default" if "serving_default" in names else
                                (names[0] if names else None))
    if wanted not in names:
        raise ConfigError(f"the SavedModel has no signature '{wanted}'", file=display,
                          field="signature", value=names,
                          fix="set 'signature' to one of: " + (", ".join(names) or "(none: re-export "
                              "with a serving signature)"))
    sig = loaded.signatures[wanted]
    _, kwargs = sig.structured_input_signature
    outputs = sig.structured_outputs
    out_keys = list(outputs) if isinstance(outputs, dict) else None
    specs = [(name, list(s.shape), s.dtype) for name, s in kwargs.items()]

    def call(*xs):
        result = sig(**{name: x for (name, _, _), x in zip(specs, xs)})
        return [result[k] for k in out_keys] if out_keys else tf.nest.flatten(result)

    return loaded, call, specs, out_keys, f"tf.saved_model.load (signature {wanted})", ops


def _load_keras(path: Path, display: str, spec):
    tf = _tf()
    keras = require("keras", extra="tensorflow")
    safe = not spec.trust_custom_objects
    if zipfile.is_zipfile(path):           # a .keras archive: declared sizes, before Keras inflates it
        check_zip(path, display, MAX_MODEL_BYTES)
    elif path.suffix.lower() == ".keras":
        raise InputError("not a .keras archive (a .keras file is a zip; this one is corrupt or "
                         "truncated)", file=display, fix="re-save it with model.save('model.keras')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(str(path), compile=False, safe_mode=safe)
    except Exception as exc:
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text:
            raise UnsafeInputError("refused to load a Lambda layer (its Python code would run on "
                                   "load): Keras safe mode is on", file=display, fix=TRUST_FIX) from None
        custom = re.search(r"[Cc]ould not locate (?:class|function) '([^']+)'", text) or \
            re.search(r"Unknown (?:layer|object)[^'\"]*['\"]([^'\"]+)", text)
        if custom:
            raise InputError(f"the model uses the custom object '{custom.group(1)}', whose code is "
                             "not available to EdgeGate", file=display,
                             fix="use built-in Keras layers, or export a SavedModel "
                                 "(model.export(path)), which needs no Python code") from None
        raise InputError(f"cannot load the Keras model: {type(exc).__name__}: {_first_line(exc)}",
                         file=display, fix="re-save it with model.save('model.keras')") from None
    specs = []
    for tensor in model.inputs:
        name = str(getattr(tensor, "name", "") or f"input_{len(specs)}").split(":")[0]
        specs.append((name, list(tensor.shape), tf.as_dtype(tensor.dtype)))
    single = len(specs) == 1

    def call(*xs):
        result = model(xs[0] if single else list(xs), training=False)
        return tf.nest.flatten(result)

    how = "keras.saving.load_model (" + ("safe mode" if safe else "safe mode OFF, trusted") + ")"
    return model, call, specs, None, how, []


def _inputs(specs, declared: list[InputDecl] | None, display: str) -> list[InputDecl]:
    if declared is not None:
        if len(declared) != len(specs):
            raise ConfigError(f"'inputs' declares {len(declared)} inputs; the model has {len(specs)}",
                              file=display, field="inputs",
                              fix="declare one entry per model input, in order")
        return [InputDecl(d.name, d.shape, d.dtype) for d in declared]
    out = []
    for name, shape, dtype in specs:
        if not shape:
            raise ConfigError(f"input '{name}' has an unknown rank", file=display, field="inputs",
                              fix="declare the input shapes in 'inputs' in edgegate.yml")
        rest = shape[1:]
        if any(d is None for d in rest):
            raise ConfigError(f"input '{name}' has dynamic axes {shape} beyond the batch axis",
                              file=display, field="inputs", value=shape,
                              fix="declare static shapes in 'inputs' in edgegate.yml, e.g. "
                                  f"{{{name}: {{shape: [batch, 224, 224, 3]}}}}")
        out.append(InputDecl(name, (BATCH, *rest), dtype.name))
    return out


def _convert(fn_call, inputs: list[InputDecl], opset: int, out: Path, display: str):
    tf = _tf()
    tf2onnx = require("tf2onnx", extra="tensorflow")
    signature = [tf.TensorSpec([None, *d.shape[1:]], tf.as_dtype(d.dtype), name=d.name)
                 for d in inputs]
    function = tf.function(fn_call, input_signature=signature)
    import logging

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        model, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    except Exception as exc:
        op = re.search(r"op \[?([\w/:]+)\]?", str(exc)) or re.search(r"'(\w+)' is not supported", str(exc))
        raise ConversionError("tf2onnx cannot convert the model" +
                              (f" (op {op.group(1)})" if op else "") + f": {_first_line(exc)}",
                              file=display,
                              fix="set a newer 'opset' in edgegate.yml, declare static 'inputs', or "
                                  "replace the unsupported op / layer") from None
    import onnx

    foreign = sorted({f"{n.op_type} (node {n.name})" for n in model.graph.node
                      if n.domain not in ONNX_DOMAINS or
                      (n.domain in ("", "ai.onnx") and not onnx.defs.has(n.op_type))})
    if foreign:
        raise ConversionError(f"tf2onnx cannot convert the TensorFlow op(s) "
                              f"{', '.join(foreign[:5])} at opset {opset}", file=display,
                              fix="set a newer 'opset' in edgegate.yml, or replace the layer that "
                                  "uses these ops")
    return model, function


class TensorFlowFrontend:
    id = "tensorflow"

    def load(self, path: Path, display: str, spec, workdir: Path, root: Path) -> SourceModel:
        tf = _tf()
        require("tf2onnx", extra="tensorflow")
        import onnx

        size = _size_of(path)
        if size > MAX_MODEL_BYTES:
            raise InputError(f"the model is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit",
                             file=display, fix="raise the limit only for trusted repositories")
        if path.is_dir():
            if not (path / "saved_model.pb").is_file():
                raise InputError("a folder without saved_model.pb is not a SavedModel", file=display,
                                 fix="commit the whole SavedModel folder")
            kind = "savedmodel"
            _, call, specs, out_keys, loaded_by, ops = _load_saved_model(path, display, spec)
        elif path.suffix.lower() in (".keras", ".h5", ".hdf5"):
            kind = path.suffix.lower().lstrip(".")
            _, call, specs, out_keys, loaded_by, ops = _load_keras(path, display, spec)
        else:
            raise InputError(f"not a TensorFlow model ('{path.suffix}')", file=display,
                             fix="use a SavedModel folder, a .keras or an .h5 file")
        inputs = _inputs(specs, declared_inputs(spec, display), display)
        opset = spec.opset or DEFAULT_OPSET
        model, function = _convert(call, inputs, opset, workdir / "source.onnx", display)
        names = [k or f"output_{i}" for i, k in enumerate(out_keys or [])]
        if len(names) != len(model.graph.output):
            names = ["output"] if len(model.graph.output) == 1 else \
                [f"output_{i}" for i in range(len(model.graph.output))]
        rename_outputs(model, names)
        out = workdir / "source.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(out))
        reference = TfReference(function, [d.name for d in inputs])
        check = check_export(reference.infer, out, inputs, display, spec.export_max_abs_diff)
        return SourceModel(
            onnx_path=out, framework="tensorflow", framework_version=tf.__version__,
            export=f"{loaded_by} -> tf2onnx {require('tf2onnx', extra='tensorflow').__version__} "
                   f"(from_function), opset {opset}",
            reference=reference,
            details={"kind": kind, "loaded_by": loaded_by, "exporter": "tf2onnx", "opset": opset,
                     "layout": "as the source model (Keras: usually NHWC)",
                     "inputs": {d.name: {"shape": list(d.shape), "dtype": d.dtype} for d in inputs},
                     "check_random": check, "notes": []})
