"""ONNX -> TensorFlow SavedModel and TFLite files with onnx2tf, offline, fed our calibration samples.

onnx2tf has two traps (TOOLCHAIN.md): for image-shaped models it downloads a sample ``.npy`` from
GitHub (even when given calibration data) and it overwrites the input ``.onnx`` in place. Here it
always gets a copy of the model, runs in a folder that already holds the file it would download
(zeros, never read for calibration because our samples are always passed), and is fed the
calibration samples of the one calibration contract through its custom calibration option.

The conversion is cached per model in the model's work folder, so the TFLite and Core ML targets
of one model share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgegate._deps import require, version_of
from edgegate.data.sources import Dataset, TensorSpec
from edgegate.errors import ConversionError, EdgeGateError

TRAP_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
FILES = {"float32": "float32", "float16": "float16", "int8": "full_integer_quant",
         "int8-float-io": "integer_quant"}


@dataclass
class TFConversion:
    folder: Path                               # the SavedModel (also holds the .tflite files)
    tflite: dict[str, Path]                    # "float32" | "float16" | "int8" | "int8-float-io"
    input_perms: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    input_names: dict[str, str] = field(default_factory=dict)   # source name -> converted name
    io_dtype: str = "int8"
    calibration_samples: int = 0
    log: Path | None = None
    onnx2tf_version: str | None = None


def channels_last_perm(rank: int) -> tuple[int, ...] | None:
    """onnx2tf turns NCW/NCHW/NCDHW inputs into NWC/NHWC/NDHWC."""
    if rank < 3 or rank > 5:
        return None
    return (0, *range(2, rank), 1)


def _key(onnx_path: Path, calibration: Dataset | None, io_dtype: str) -> str:
    h = hashlib.sha256(onnx_path.read_bytes())
    h.update(io_dtype.encode())
    if calibration is not None:
        for name in sorted(calibration.inputs):
            h.update(name.encode())
            h.update(np.ascontiguousarray(calibration.inputs[name]).tobytes())
    return h.hexdigest()[:16]


def convert(onnx_path: Path, cache_root: Path, inputs: list[TensorSpec], calibration: Dataset | None,
            io_dtype: str = "int8", display: str = "") -> TFConversion:
    """Convert once per (model, calibration, io dtype); ``calibration=None`` converts float only
    unless an INT8 conversion of the same model already sits in the cache."""
    onnx2tf_version = version_of("onnx2tf")
    if calibration is None:
        for done in sorted(cache_root.glob("onnx2tf-*/done.json")):
            info = json.loads(done.read_text())
            if info.get("onnx") == hashlib.sha256(onnx_path.read_bytes()).hexdigest():
                return _from_done(done.parent, info)
    key = _key(onnx_path, calibration, io_dtype)
    folder = cache_root.resolve() / f"onnx2tf-{key}"
    done = folder / "done.json"
    if done.is_file():
        return _from_done(folder, json.loads(done.read_text()))
    shutil.rmtree(folder, ignore_errors=True)
    scratch = folder / "scratch"
    scratch.mkdir(parents=True)
    model_copy = scratch / "model.onnx"              # onnx2tf rewrites its input in place
    graph_only = onnx.load(str(onnx_path), load_external_data=False)
    renamed = _copy_with_plain_input_names(onnx_path, model_copy, graph_only)
    # What onnx2tf would download lies here already; it is never used for calibration.
    np.save(scratch / TRAP_FILE, np.zeros((20, 128, 128, 3), np.float32))
    already = channels_last_inputs(graph_only)         # fed NHWC already: kept as they are
    del graph_only
    perms = {t.name: None if t.name in already else channels_last_perm(len(t.shape)) for t in inputs}
    custom = None
    samples = 0
    # onnx2tf feeds its calibration to the TFLite converter as float32 whatever the input's type,
    # so a model with integer inputs (uint8 images, int64 token ids) is quantized here instead
    own_int8: dict[str, np.ndarray] | None = None
    if calibration is not None and any(np.dtype(t.dtype).kind != "f" for t in inputs):
        own_int8 = {}
        for t in inputs:
            arr = _calibration_array(calibration, t, perms, display, np.dtype(t.dtype))
            own_int8[renamed.get(t.name, t.name)] = arr
            samples = len(arr)
    elif calibration is not None:
        custom = []
        for t in inputs:
            arr = _calibration_array(calibration, t, perms, display, np.dtype(np.float32))
            npy = scratch / f"calibration-{len(custom)}.npy"
            np.save(npy, arr)
            custom.append([renamed.get(t.name, t.name), str(npy), 0.0, 1.0])   # used as given
            samples = len(arr)
    log = folder / "onnx2tf.log"
    kwargs = dict(input_onnx_file_path=str(model_copy), output_folder_path=str(folder),
                  non_verbose=True, batch_size=1)
    if already:
        kwargs["keep_nwc_or_nhwc_or_ndhwc_input_names"] = [renamed.get(n, n) for n in sorted(already)]
    if custom is not None:
        kwargs.update(output_integer_quantized_tflite=True, custom_input_op_name_np_data_path=custom,
                      input_quant_dtype=io_dtype if io_dtype != "float32" else "int8",
                      output_quant_dtype=io_dtype if io_dtype != "float32" else "int8")
    try:
        with quiet(log), _cwd(scratch):
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            require("onnx2tf", extra="tflite").convert(**kwargs)
    except EdgeGateError:
        raise
    except (Exception, SystemExit) as exc:
        op = _failed_op(log)
        first = " ".join(str(exc).split())[:200]
        raise ConversionError(
            f"onnx2tf {onnx2tf_version} could not convert the model"
            + (f" at node '{op}'" if op else "") + f": {type(exc).__name__}: {first}",
            file=display,
            fix="onnx2tf does not support this graph as exported: gate the model on an ONNX Runtime "
                "device, or leave this device out for it ('devices:' of the model in edgegate.yml); "
                "--keep-work keeps the full onnx2tf log") from None
    if own_int8 is not None:
        _int8_from_saved_model(folder, own_int8, io_dtype, log, display)
    tflite = {k: folder / f"model_{v}.tflite" for k, v in FILES.items()
              if (folder / f"model_{v}.tflite").is_file()}
    if "float32" not in tflite:
        raise ConversionError(f"onnx2tf wrote no TFLite model; last log lines: {_tail(log)}",
                              file=display, fix="see the onnx2tf log in the work folder (--keep-work)")
    if (custom is not None or own_int8 is not None) and "int8" not in tflite:
        raise ConversionError("TFLite full-integer quantization failed (an op has no INT8 kernel?); "
                              f"last log lines: {_tail(log)}", file=display,
                              fix="use precision: fp16 for this device, or replace the op")
    shutil.rmtree(scratch, ignore_errors=True)
    info = {"onnx": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "tflite": {k: p.name for k, p in tflite.items()},
            "input_perms": {k: list(v) if v else None for k, v in perms.items()},
            "input_names": renamed,
            "io_dtype": io_dtype, "calibration_samples": samples, "onnx2tf": onnx2tf_version}
    done.write_text(json.dumps(info, indent=2))
    return _from_done(folder, info)


def _from_done(folder: Path, info: dict) -> TFConversion:
    return TFConversion(folder=folder, tflite={k: folder / v for k, v in info["tflite"].items()},
                        input_perms={k: tuple(v) if v else None for k, v in info["input_perms"].items()},
                        input_names=info.get("input_names", {}),
                        io_dtype=info["io_dtype"], calibration_samples=info["calibration_samples"],
                        log=folder / "onnx2tf.log", onnx2tf_version=info.get("onnx2tf"))


def _calibration_array(calibration: Dataset, t: TensorSpec, perms: dict, display: str,
                       dtype: np.dtype) -> np.ndarray:
    if t.name not in calibration.inputs:
        raise ConversionError(f"no calibration samples for input '{t.name}'", file=display,
                              fix="name the calibration arrays after the model's inputs")
    arr = np.asarray(calibration.inputs[t.name], dtype=dtype)
    if calibration.squeeze.get(t.name):
        arr = arr[:, None]
    if perms[t.name] is not None and arr.ndim == len(perms[t.name]):
        arr = arr.transpose(perms[t.name])
    return arr


def _int8_from_saved_model(folder: Path, arrays: dict[str, np.ndarray], io_dtype: str, log: Path,
                           display: str) -> None:
    """Full-integer TFLite files from onnx2tf's SavedModel with the TFLite converter, calibrated
    on samples in each input's own dtype: model_full_integer_quant.tflite (float inputs and
    outputs as ``io_dtype``) and model_integer_quant.tflite (float inputs and outputs)."""
    tf = require("tensorflow", extra="tflite")
    n = min(len(a) for a in arrays.values())

    def samples():
        for i in range(n):
            yield {k: a[i:i + 1] for k, a in arrays.items()}

    io = {"int8": tf.int8, "uint8": tf.uint8}.get(io_dtype, tf.int8)
    float_inputs = any(a.dtype.kind == "f" for a in arrays.values())
    for name, typed in (("full_integer_quant", True), ("integer_quant", False)):
        try:
            with quiet(log):
                converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = samples
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                if typed:
                    if float_inputs:
                        converter.inference_input_type = io
                    converter.inference_output_type = io
                (folder / f"model_{name}.tflite").write_bytes(converter.convert())
        except Exception as exc:     # the converter raises its own types
            raise ConversionError(f"TFLite full-integer quantization failed: {type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}", file=display,
                                  fix="use precision: fp16 for this device, or replace the op") from None


_PASS_THROUGH = {"Cast", "Div", "Mul", "Sub", "Add", "Identity"}


def channels_last_inputs(model: onnx.ModelProto) -> set[str]:
    """Inputs the graph takes channels-last (NHWC, like a model from TensorFlow): each use goes,
    through casts and scaling at most, into a Transpose to channels-first. onnx2tf would
    transpose them once more (and a 1-channel NHWC image then failed in a Conv): they are kept."""
    users: dict[str, list] = {}
    for node in model.graph.node:
        for x in node.input:
            users.setdefault(x, []).append(node)
    init = {i.name for i in model.graph.initializer}
    found = set()
    for v in model.graph.input:
        rank = len(v.type.tensor_type.shape.dim)
        if v.name in init or not 3 <= rank <= 5:
            continue
        to_first = [0, rank - 1, *range(1, rank - 1)]
        frontier, ok, steps = [v.name], True, 0
        while frontier and ok and steps < 8:
            steps += 1
            nxt = []
            for name in frontier:
                for node in users.get(name, []) or [None]:
                    if node is None:
                        ok = False
                    elif node.op_type == "Transpose":
                        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                        ok = ok and perm == to_first
                    elif node.op_type in _PASS_THROUGH:
                        nxt.extend(node.output)
                    else:
                        ok = False
            frontier = nxt
        if ok and not frontier:
            found.add(v.name)
    return found


def plain_name(name: str) -> str:
    """An identifier TensorFlow keeps as it is ('input_1:0' -> 'input_1_0')."""
    plain = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return plain if plain and not plain[0].isdigit() else "i_" + plain


def _copy_with_plain_input_names(src: Path, dst: Path, model: onnx.ModelProto) -> dict[str, str]:
    """Copy the model for onnx2tf, renaming inputs TensorFlow would mangle (':', '/', '.'...):
    onnx2tf renames them itself but then cannot find them in its calibration data (KeyError
    'input_1__0' on a tf2onnx-style 'input_1:0'). ``model`` is src's graph (weights not loaded).
    Returns {source name: new name}."""
    taken = {v.name for v in [*model.graph.input, *model.graph.output]}
    taken |= {o for n in model.graph.node for o in n.output}
    renamed: dict[str, str] = {}
    for v in model.graph.input:
        plain = plain_name(v.name)
        if plain == v.name:
            continue
        while plain in taken:
            plain += "_"
        taken.add(plain)
        renamed[v.name] = plain
    if not renamed:
        shutil.copyfile(src, dst)
        return {}
    model = onnx.load(str(src))                        # with its weights, wherever they lie
    for v in model.graph.input:
        v.name = renamed.get(v.name, v.name)
    _rename_uses(model.graph, renamed)
    onnx.save(model, str(dst))
    return renamed


def _rename_uses(graph, renamed: dict[str, str]) -> None:
    for node in graph.node:
        for k, x in enumerate(node.input):
            if x in renamed:
                node.input[k] = renamed[x]
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:      # outer-scope references in subgraphs
                _rename_uses(a.g, renamed)


def _failed_op(log: Path) -> str | None:
    """The ONNX node onnx2tf stopped at, from its log ("onnx_op_name: ...")."""
    import re

    try:
        raw = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
        found = re.findall(r"onnx_op_name:\s*(\S+)", raw)
    except OSError:
        return None
    return found[-1] if found else None


def _tail(log: Path, lines: int = 6) -> str:
    import re

    try:
        raw = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text(errors="replace"))
        text = [ln for ln in raw.splitlines()
                if ln.strip() and not ln.startswith(("W0000", "I0000"))]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-800:]


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def quiet(log: Path):
    """onnx2tf and the TFLite converter print pages (Python and C++): send them to a log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log.open("ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
