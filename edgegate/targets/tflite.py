"""TFLite / LiteRT (Raspberry Pi, Android, Edge TPU): full-integer INT8 or FP16 from ONNX via onnx2tf.

Measured here with the LiteRT interpreter and XNNPACK on the host CPU: a host measurement of the
device's runtime, and the measurement says so. The runner takes the pipeline's feed in the ONNX
layout (NCHW) and does the layout change and the INT8 input/output (de)quantization itself, so the
one evaluator serves this target unchanged.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import numpy as np

from edgegate._deps import require, version_of
from edgegate.errors import ConversionError, InputError
from edgegate.targets.base import CompileJob, Compiled, binding_of, host_machine, names_of, perms_of
from edgegate.targets.onnx_to_tf import TFConversion, convert

COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL",
               "TRANSPOSE_CONV", "CONV_3D", "UNIDIRECTIONAL_SEQUENCE_LSTM"}
QUANT_DTYPES = (np.int8, np.uint8, np.int16)
EDGETPU_WHY = ("the Edge TPU compiler (edgetpu_compiler) is distributed only as a Debian package "
               "from Google's Coral apt repository for x86-64 Linux; it is not installed here")


def _interpreter(path: Path, threads: int | None, delegate: bool = True):
    litert = require("ai_edge_litert.interpreter", extra="tflite")
    kwargs = {"model_path": str(path), "num_threads": threads}
    if not delegate:
        kwargs["experimental_op_resolver_type"] = \
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return litert.Interpreter(**kwargs)


class TFLiteRunner:
    """A .tflite model behind ``infer(feed)`` in the ONNX layout and dtypes."""

    def __init__(self, path: Path, threads: int | None = None, display: str = "",
                 input_perms: dict[str, tuple[int, ...] | None] | None = None,
                 device_note: str | None = None, input_names: dict[str, str] | None = None):
        from edgegate.targets.onnxruntime import default_threads

        threads = threads or default_threads()
        try:
            self.it = _interpreter(path, threads)
            self.it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"LiteRT cannot load {path.name}: {str(exc)[:300]}", file=display,
                             fix="check the TFLite model's ops are LiteRT builtins") from None
        self.perms = input_perms or {}
        self.inputs = self.it.get_input_details()
        self.outputs = _source_order(self.it, self.it.get_output_details())
        self._names = [_plain(d["name"]) for d in self.inputs]
        self.renamed = {v: k for k, v in (input_names or {}).items()}   # TFLite name -> source name
        self.measurement = {
            "runtime": "litert", "runtime_version": version_of("ai-edge-litert"),
            "provider": "XNNPACK delegate", "delegate": "XNNPACK (LiteRT default CPU delegate)",
            "threads": threads,
            "machine": host_machine(), "where": "host",
            "device_note": device_note or "measured on this host with LiteRT+XNNPACK, not on the device",
        }

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = list(feed)
        for i, detail in enumerate(self.inputs):
            name = self.renamed.get(self._names[i], self._names[i])
            if name not in feed:
                name = names[min(i, len(names) - 1)]
            x = np.asarray(feed[name])
            perm = self.perms.get(name)
            if perm is not None and x.ndim == len(perm):
                x = x.transpose(perm)
            x = _quantize(x, detail)
            if tuple(x.shape) != tuple(detail["shape"]):
                self.it.resize_tensor_input(detail["index"], list(x.shape))
                self.it.allocate_tensors()
            self.it.set_tensor(detail["index"], np.ascontiguousarray(x))
        self.it.invoke()
        return [_dequantize(self.it.get_tensor(d["index"]), d) for d in self.outputs]


def _source_order(it, outputs: list[dict]) -> list[dict]:
    """Output details in the source model's output order. LiteRT lists a converted model's
    outputs in its own tensor order (a two-output ONNX model came back reversed); onnx2tf's
    signature keeps the source order (``output_0``, ``output_1``...), and so do the
    ``PartitionedCall:N`` tensor names. Unchanged when neither tells."""
    import re

    if len(outputs) < 2:
        return outputs
    by_index = {d["index"]: d for d in outputs}
    try:
        signatures = it._get_full_signature_list() or {}
    except Exception:      # a private API: its absence only loses the ordering hint
        signatures = {}
    for sig in signatures.values():
        keys = sig.get("outputs", {})
        numbered = {k: re.fullmatch(r"output_(\d+)", k) for k in keys}
        if len(keys) == len(outputs) and all(numbered.values()) and set(keys.values()) == set(by_index):
            return [by_index[keys[k]] for k in sorted(keys, key=lambda k: int(numbered[k].group(1)))]
    suffix = [re.fullmatch(r".*PartitionedCall:(\d+)", d["name"]) for d in outputs]
    if all(suffix):
        return [d for _, d in sorted(zip((int(m.group(1)) for m in suffix), outputs), key=lambda t: t[0])]
    return outputs


def _plain(name: str) -> str:
    """'serving_default_input:0' -> 'input' (int8 models keep the SavedModel signature names)."""
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    return name.rsplit(":", 1)[0] if name.endswith(":0") else name


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    scale, zero = detail["quantization"]
    if dtype in QUANT_DTYPES and scale:         # scale 0: a plain integer input (uint8 image)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if detail["dtype"] in QUANT_DTYPES and scale:
        return (y.astype(np.float32) - zero) * scale
    return np.array(y, copy=True)


def op_census(path: Path) -> dict:
    """Which ops run in INT8 and which stay float, with MACs of the compute ops (batch 1)."""
    it = _interpreter(path, 1, delegate=False)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    total = quantized = 0
    macs_total = macs_int8 = 0
    float_ops: list[str] = []
    compute_total = compute_int8 = 0
    for op in it._get_ops_details():                                # noqa: SLF001 (public in tf.lite)
        name = op["op_name"]
        if name in ("DELEGATE", "QUANTIZE", "DEQUANTIZE"):
            continue
        ins = [tensors[i] for i in op["inputs"] if i >= 0 and i in tensors]
        if not ins:
            continue
        total += 1
        is_q = ins[0]["dtype"] in QUANT_DTYPES
        quantized += is_q
        if name in COMPUTE_OPS:
            compute_total += 1
            compute_int8 += is_q
            outs = [tensors[i] for i in op["outputs"] if i in tensors]
            macs = _macs(name, ins, outs)
            macs_total += macs
            macs_int8 += macs if is_q else 0
            if not is_q:
                float_ops.append(f"{name}#{op['index']}")
        elif not is_q and ins[0]["dtype"] == np.float32:
            float_ops.append(f"{name}#{op['index']}")
    return {"ops_total": total, "ops_int8": quantized,
            "int8_op_share": quantized / total if total else None,
            "compute_nodes_total": compute_total, "compute_nodes_quantized": compute_int8,
            "int8_mac_share": macs_int8 / macs_total if macs_total else None,
            "macs_total": macs_total, "float_ops": float_ops}


def _macs(op: str, ins: list[dict], outs: list[dict]) -> int:
    if len(ins) < 2 or not outs:
        return 0
    out = int(np.prod(outs[0]["shape"])) if len(outs[0]["shape"]) else 1
    w = [int(d) for d in ins[1]["shape"]]
    if op in ("CONV_2D", "CONV_3D") and len(w) >= 2:
        return out * int(np.prod(w[1:]))            # OHWI: each output sums H*W*I products
    if op == "DEPTHWISE_CONV_2D" and len(w) == 4:
        return out * w[1] * w[2]
    if op == "FULLY_CONNECTED" and len(w) == 2:
        return out * w[1]
    if op == "BATCH_MATMUL" and len(ins[0]["shape"]):
        return out * int(ins[0]["shape"][-1])
    if op == "TRANSPOSE_CONV" and len(ins) >= 3 and len(w) == 4:
        return int(np.prod(ins[2]["shape"])) * w[0] * w[1] * w[2]   # inputs: shape, OHWI, x
    return 0


class TFLiteTarget:
    id = "tflite"

    def __init__(self):
        self._device_note: str | None = None

    def runner(self, path: Path, threads: int | None = None, display: str = "",
               binding: dict | None = None) -> TFLiteRunner:
        return TFLiteRunner(path, threads, display, input_perms=perms_of(binding),
                            device_note=self._device_note, input_names=names_of(binding))

    def compile(self, job: CompileJob) -> Compiled:
        profile = job.device.profile
        precision = profile.precision or "int8"
        if precision not in ("int8", "fp16", "fp32"):
            raise ConversionError(f"the tflite target has no '{precision}' recipe", file=job.display,
                                  field=f"devices.{job.device.id}.precision", value=precision,
                                  fix="use int8, fp16 or fp32")
        io_dtype = getattr(profile, "io_dtype", None) or "int8"
        calibration = job.calibration if precision == "int8" else None
        conv = convert(job.model_path, job.workdir.parent, job.info.inputs, calibration,
                       io_dtype=io_dtype, display=job.display)
        if precision == "int8":
            variant = "int8-float-io" if io_dtype == "float32" else "int8"
        else:
            variant = "float16" if precision == "fp16" else "float32"
        device_name = (profile.description or job.device.id).split(",")[0]
        self._device_note = (f"measured on this {platform.machine()} host with LiteRT+XNNPACK, "
                             f"not on a {device_name}")
        artifact = self._place(conv, variant, job, precision)
        baseline = self._place(conv, "float32", job, "fp32-baseline")
        int_inputs = (" (integer inputs keep their type)"
                      if any(np.dtype(t.dtype).kind != "f" for t in job.info.inputs) else "")
        notes = [f"ONNX -> TensorFlow with onnx2tf {conv.onnx2tf_version}, then the TFLite converter "
                 f"({'full-integer INT8, ' + io_dtype + ' inputs/outputs' + int_inputs + ', ' if precision == 'int8' else ''}"
                 f"{precision})"]
        perms = {k: v for k, v in conv.input_perms.items() if v}
        if perms:
            notes.append("the TFLite model takes channels-last inputs (" +
                         ", ".join(f"{k}: transpose{list(v)}" for k, v in perms.items()) +
                         "); the device app must feed that layout")
        quant: dict = {"method": "onnx2tf + TFLiteConverter "
                                  + ("full-integer INT8" if precision == "int8" else precision),
                       "precision": precision}
        census = op_census(artifact)
        float_ops = census.pop("float_ops")
        quant["float_nodes"] = float_ops
        quant["kept_in_float"] = []
        if precision == "int8":
            quant.update(activation_type="int8", weight_type="int8", per_channel=True,
                         io_dtype=io_dtype, calibration_method="minmax (TFLite converter)",
                         calibration_samples=conv.calibration_samples)
            kept = [{"node": op, "reason": "no INT8 kernel / left float by the converter"}
                    for op in float_ops]
            if job.quantization.exclude_nodes:
                kept += [{"node": n, "reason": "excluded in edgegate.yml, but NOT honoured: onnx2tf "
                                               "full-integer conversion cannot keep a chosen layer "
                                               "in float"} for n in job.quantization.exclude_nodes]
                notes.append("exclude_nodes is not honoured by the tflite target: the full-integer "
                             "TFLite model quantizes every layer that has an INT8 kernel")
            quant["kept_in_float"] = kept
        quant.update(census)
        edgetpu = getattr(profile, "compiler", None) == "edgetpu"
        if edgetpu:
            notes.append(f"Edge TPU compile step not available: {EDGETPU_WHY}. The shipped artifact is "
                         "the full-integer TFLite model; compile it with `edgetpu_compiler "
                         f"{artifact.name}` on a machine with the Coral apt repository. Latency here is "
                         "LiteRT on the host CPU, not the Edge TPU")
        return Compiled(artifact=artifact, precision=precision, format="tflite", baseline=baseline,
                        quantization=quant, notes=notes,
                        input_binding=binding_of(conv.input_perms, conv.input_names))

    @staticmethod
    def _place(conv: TFConversion, variant: str, job: CompileJob, label: str) -> Path:
        src = conv.tflite.get(variant)
        if src is None or not src.is_file():
            raise ConversionError(f"onnx2tf did not write the {variant} TFLite model", file=job.display,
                                  fix="see the onnx2tf log (--keep-work)")
        dest = job.workdir / f"{job.name}.{job.device.id}.{label}.tflite"
        shutil.copyfile(src, dest)
        return dest
