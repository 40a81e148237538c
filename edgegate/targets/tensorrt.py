"""TensorRT (Jetson): explicit quantization from a QDQ ONNX (TensorRT's recommended INT8 path) or FP16.

The QDQ model comes from the same quantizer as the ONNX Runtime target, with TensorRT's settings:
symmetric INT8 activations (zero point 0) and symmetric per-channel INT8 weights. FP16 ships the
FP32 ONNX and lets the engine builder lower it (``--fp16``).

An engine is specific to the GPU and TensorRT version that built it, so it is built on the device.
With a CUDA device and TensorRT here, the engine is built with the TensorRT Python API and timed
(torch provides the CUDA buffers); without them the artifact is the ONNX plus ``build-engine.sh``
holding the exact ``trtexec`` command, and engine metrics are reported as not measurable here.
``tensorrt`` is imported only inside this module's functions, and only when this target runs.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import onnx

from edgegate._deps import require, version_of
from edgegate.errors import ConversionError, InputError
from edgegate.stages.analyze import node_macs
from edgegate.stages.quantize import float_only_nodes, quantize
from edgegate.targets.base import CompileJob, Compiled, host_machine

TRT_SETTINGS = {"activation_type": "int8", "weight_type": "int8", "per_channel": True,
                # TensorRT takes INT8 Q/DQ only: biases stay float (no INT32 DequantizeLinear)
                "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True,
                                  "QuantizeBias": False}}


def engine_command(onnx_name: str, precision: str, inputs: list, workspace_mb: int = 1024) -> list[str]:
    """The trtexec command that builds the engine on the device."""
    engine = Path(onnx_name).with_suffix(".engine").name
    cmd = ["trtexec", f"--onnx={onnx_name}", f"--saveEngine={engine}",
           f"--memPoolSize=workspace:{workspace_mb}M"]
    cmd += ["--int8", "--fp16"] if precision == "int8" else ["--fp16"]   # fp16 for what stays float
    shapes = [f"{t.name}:{'x'.join(str(d if isinstance(d, int) and d > 0 else 1) for d in t.shape)}"
              for t in inputs if any(not (isinstance(d, int) and d > 0) for d in t.shape)]
    if shapes:
        spec = ",".join(shapes)
        cmd += [f"--minShapes={spec}", f"--optShapes={spec}", f"--maxShapes={spec}"]
    return cmd


def build_script(onnx_name: str, command: list[str], device: str) -> str:
    quoted = " ".join(shlex.quote(c) for c in command)
    return ("#!/bin/sh\n"
            f"# Build the TensorRT engine for {device} ON THE DEVICE (an engine is specific to its\n"
            "# GPU and TensorRT version). trtexec ships with JetPack: /usr/src/tensorrt/bin/trtexec.\n"
            "set -eu\n"
            'cd "$(dirname "$0")"\n'
            'PATH="$PATH:/usr/src/tensorrt/bin"\n'
            f"{quoted}\n")


def check_trt_qdq(path: Path, display: str) -> dict:
    """TensorRT's explicit quantization needs symmetric scales: every zero point must be 0."""
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    init = {i.name: i for i in model.graph.initializer}
    nonzero, wide, qdq = [], [], 0
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            qdq += 1
            if len(node.input) > 2 and node.input[2] in init:
                zero = numpy_helper.to_array(init[node.input[2]])
                if np.any(zero != 0):
                    nonzero.append(node.name)
                if zero.dtype != np.int8:
                    wide.append(node.name)
    if wide:
        raise ConversionError(f"{len(wide)} Q/DQ nodes are not INT8 (first: {wide[0]}); TensorRT "
                              "takes INT8 Q/DQ only", file=display,
                              fix="report this as a bug: the TensorRT recipe must keep biases float")
    if nonzero:
        raise ConversionError(f"{len(nonzero)} Q/DQ nodes have non-zero zero points, which TensorRT "
                              f"rejects (first: {nonzero[0]})", file=display,
                              fix="report this as a bug: the TensorRT recipe must be symmetric")
    return {"qdq_nodes": qdq, "zero_points": "all 0 (symmetric)"}


def cuda_ready() -> tuple[bool, str]:
    from edgegate.targets import _has_cuda
    from edgegate._deps import available, install_hint

    if not _has_cuda():
        return False, "no CUDA device on this machine (nvidia-smi finds none)"
    if not available("tensorrt"):
        return False, f"TensorRT is not installed ({install_hint('tensorrt')}, or JetPack)"
    if not available("torch"):
        return False, "torch (with CUDA) is needed for the engine's device buffers"
    return True, ""


class TensorRTTarget:
    id = "tensorrt"

    def runner(self, path: Path, threads: int | None = None, display: str = "",
               binding: dict | None = None):               # fed as the source model: no binding
        return TrtRunner(path, display)

    def compile(self, job: CompileJob) -> Compiled:
        profile = job.device.profile
        precision = profile.precision or "int8"
        if precision not in ("int8", "fp16"):
            raise ConversionError(f"the tensorrt target has no '{precision}' recipe", file=job.display,
                                  field=f"devices.{job.device.id}.precision", value=precision,
                                  fix="use int8 or fp16")
        spec = job.quantization
        quant: dict = {"precision": precision, "kept_in_float": []}
        if precision == "int8":
            method = spec.calibration_method or job.calibration.info.get("method") or "minmax"
            onnx_path = job.workdir / f"{job.name}.{job.device.id}.int8-qdq.onnx"
            forced = float_only_nodes(job.model_path, job.calibration, skip=spec.exclude_nodes)
            q = quantize(job.model_path, onnx_path, job.calibration, method=method,
                         exclude=[*spec.exclude_nodes, *forced], op_types=spec.op_types,
                         display=job.display,
                         cache=job.workdir / f"calibration-{method}.json", **TRT_SETTINGS)
            macs = node_macs(onnx.load(str(job.model_path), load_external_data=False))
            total = sum(macs.values())
            quant.update({
                "method": "onnxruntime.quantize_static (QDQ, TensorRT explicit quantization)",
                "activation_type": "int8 (symmetric)", "weight_type": "int8 (symmetric)",
                "per_channel": True, "calibration_method": method,
                "calibration_samples": len(job.calibration),
                "quantized_nodes": q.quantized_nodes, "float_nodes": q.float_nodes,
                "kept_in_float": [{"node": n, "reason": forced.get(n, "excluded in edgegate.yml")}
                                  for n in q.excluded],
                "compute_nodes_quantized": len(q.quantized_nodes),
                "compute_nodes_total": len(q.quantized_nodes) + len(q.float_nodes),
                "int8_mac_share": (sum(macs.get(n, 0) for n in q.quantized_nodes) / total) if total else None,
                "macs_total": total,
                **check_trt_qdq(onnx_path, job.display)})
        else:
            onnx_path = job.workdir / f"{job.name}.{job.device.id}.fp16.onnx"
            onnx_path.write_bytes(job.model_path.read_bytes())
            quant["method"] = "FP32 ONNX; the engine builder lowers it to FP16 (--fp16)"
        published = f"{job.name}-{job.device.id}-{precision}.onnx"     # the name it is published under
        command = engine_command(published, precision, job.info.inputs)
        script = job.workdir / "build-engine.sh"
        script.write_text(build_script(published, command, job.device.id))
        script.chmod(0o755)
        quant["engine_build_command"] = " ".join(shlex.quote(c) for c in command)
        notes = [f"build the engine on the {job.device.id}: {quant['engine_build_command']} "
                 "(also in build-engine.sh next to the artifact)"]
        ready, why = cuda_ready()
        if not ready:
            return Compiled(artifact=onnx_path, precision=precision, format="onnx", baseline=None,
                            quantization=quant, notes=notes, measurable=False,
                            not_measurable_reason=f"TensorRT engine not built here: {why}",
                            extra_files=[script])
        engine = build_engine(onnx_path, precision, job.info.inputs, job.display)
        baseline = build_engine(job.model_path, "fp32", job.info.inputs, job.display,
                                out=job.workdir / f"{job.name}.fp32-baseline.engine")
        notes.append("the engine was built and timed on this machine's GPU; the device must rebuild it")
        return Compiled(artifact=engine, precision=precision, format="tensorrt-engine",
                        baseline=baseline, quantization=quant, notes=notes, extra_files=[script])


def build_engine(onnx_path: Path, precision: str, inputs: list, display: str,
                 out: Path | None = None) -> Path:
    """Build a serialized engine with the TensorRT 10 Python API (needs a CUDA device)."""
    trt = require("tensorrt", extra="tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(f"TensorRT cannot parse the ONNX model: {errors[:400]}", file=display,
                              fix="check the ops against TensorRT's ONNX operator support matrix")
    config = builder.create_builder_config()
    if precision in ("int8", "fp16"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)      # the QDQ nodes carry the scales
    profile = builder.create_optimization_profile()
    for t in inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in t.shape)
        profile.set_shape(t.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise ConversionError("TensorRT could not build the engine", file=display,
                              fix="run trtexec with --verbose on the device to see why")
    out = out or onnx_path.with_suffix(".engine")
    out.write_bytes(bytes(blob))
    return out


class TrtRunner:
    """A serialized engine behind ``infer(feed)``; CUDA buffers come from torch."""

    def __init__(self, path: Path, display: str = ""):
        trt = require("tensorrt", extra="tensorrt")
        torch = require("torch", extra="pytorch")
        if not torch.cuda.is_available():
            raise InputError("torch sees no CUDA device", file=display,
                             fix="install a CUDA build of torch on the GPU machine")
        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError("TensorRT cannot load the engine", file=display,
                             fix="rebuild it with this TensorRT version")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.measurement = {"runtime": "tensorrt", "runtime_version": version_of("tensorrt"),
                            "provider": torch.cuda.get_device_name(0), "threads": None,
                            "machine": host_machine(), "where": "host",
                            "device_note": "measured on this machine's GPU, not on the Jetson"}

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        keep = []
        for name in self.inputs:
            x = torch.from_numpy(np.ascontiguousarray(feed[name])).cuda()
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            keep.append(x)
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            y = torch.empty(shape, dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(name, y.data_ptr())
            outs.append(y)
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return [y.cpu().numpy() for y in outs]
