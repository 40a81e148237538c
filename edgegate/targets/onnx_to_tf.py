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
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    shutil.copyfile(onnx_path, model_copy)
    # What onnx2tf would download lies here already; it is never used for calibration.
    np.save(scratch / TRAP_FILE, np.zeros((20, 128, 128, 3), np.float32))
    perms = {t.name: channels_last_perm(len(t.shape)) for t in inputs}
    custom = None
    samples = 0
    if calibration is not None:
        custom = []
        for t in inputs:
            if t.name not in calibration.inputs:
                raise ConversionError(f"no calibration samples for input '{t.name}'", file=display,
                                      fix="name the calibration arrays after the model's inputs")
            arr = np.asarray(calibration.inputs[t.name], dtype=np.float32)
            if calibration.squeeze.get(t.name):
                arr = arr[:, None]
            if perms[t.name] is not None and arr.ndim == len(perms[t.name]):
                arr = arr.transpose(perms[t.name])
            npy = scratch / f"calibration-{len(custom)}.npy"
            np.save(npy, arr)
            custom.append([t.name, str(npy), 0.0, 1.0])          # samples are used as given
            samples = len(arr)
    log = folder / "onnx2tf.log"
    kwargs = dict(input_onnx_file_path=str(model_copy), output_folder_path=str(folder),
                  non_verbose=True, batch_size=1)
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
    tflite = {k: folder / f"model_{v}.tflite" for k, v in FILES.items()
              if (folder / f"model_{v}.tflite").is_file()}
    if "float32" not in tflite:
        raise ConversionError(f"onnx2tf wrote no TFLite model; last log lines: {_tail(log)}",
                              file=display, fix="see the onnx2tf log in the work folder (--keep-work)")
    if custom is not None and "int8" not in tflite:
        raise ConversionError("TFLite full-integer quantization failed (an op has no INT8 kernel?); "
                              f"last log lines: {_tail(log)}", file=display,
                              fix="use precision: fp16 for this device, or replace the op")
    shutil.rmtree(scratch, ignore_errors=True)
    info = {"onnx": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "tflite": {k: p.name for k, p in tflite.items()},
            "input_perms": {k: list(v) if v else None for k, v in perms.items()},
            "io_dtype": io_dtype, "calibration_samples": samples, "onnx2tf": onnx2tf_version}
    done.write_text(json.dumps(info, indent=2))
    return _from_done(folder, info)


def _from_done(folder: Path, info: dict) -> TFConversion:
    return TFConversion(folder=folder, tflite={k: folder / v for k, v in info["tflite"].items()},
                        input_perms={k: tuple(v) if v else None for k, v in info["input_perms"].items()},
                        io_dtype=info["io_dtype"], calibration_samples=info["calibration_samples"],
                        log=folder / "onnx2tf.log", onnx2tf_version=info.get("onnx2tf"))


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
