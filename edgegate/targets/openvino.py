"""OpenVINO on the CPU: ONNX -> OpenVINO IR, INT8 by NNCF post-training quantization.

The artifact is a folder holding ``model.xml`` and ``model.bin`` (published, hashed and sized as
one; a release ships it zipped). Quantization uses the same calibration source as every other
target. When the evaluation data is labelled (top1/top5) and the device policy sets
``max_accuracy_drop_pp``, NNCF's accuracy-control mode (``quantize_with_accuracy_control``) keeps
the layers it must in float to stay within that budget, scored on the same evaluation data and
metric the report uses. Layers kept in float go through NNCF's ignored scope.

OpenVINO runs FP32 models in bf16 by default on CPUs that support it. Every runner here states
its inference precision hint (f32 unless told otherwise), so FP32 and INT8 are compared like with
like; the FP32 model under the default hint is timed too and reported beside it.

Importing OpenVINO sends a usage event and NNCF sends telemetry unless declined: a gate must not,
so both are imported with their telemetry declined (the CI switch each package honours).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import onnx

from edgegate._deps import require
from edgegate.errors import ConversionError, InputError
from edgegate.stages.analyze import node_macs
from edgegate.stages.benchmark import benchmark_pair
from edgegate.stages.quantize import COMPUTE_OPS
from edgegate.targets.base import CompileJob, Compiled, host_machine

# OpenVINO op types that carry the MACs (before and after the CPU plugin's fusions).
OV_COMPUTE = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul",
              "GroupConvolutionBackpropData"}
EXEC_COMPUTE = {"Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution"}
INT8_EXEC = {"u8", "i8"}
IR_FILE = "model.xml"


@contextlib.contextmanager
def _telemetry_declined():
    saved = os.environ.get("CI")
    os.environ["CI"] = "true"              # openvino_telemetry declines in CI
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's own switch
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = saved


def import_openvino():
    with _telemetry_declined():
        return require("openvino", extra="openvino")


def import_nncf():
    with _telemetry_declined():
        import_openvino()
        return require("nncf", extra="openvino")


def ir_file(path: Path) -> Path:
    """The .xml of an IR artifact given as its folder or as the .xml itself."""
    path = Path(path)
    if path.is_dir():
        xml = path / IR_FILE
        return xml if xml.is_file() else next(iter(sorted(path.glob("*.xml"))), xml)
    return path


class OpenVinoRunner:
    def __init__(self, path: Path, threads: int | None = None, display: str = "",
                 precision_hint: str | None = "f32"):
        from edgegate.targets.onnxruntime import default_threads

        ov = import_openvino()
        self.core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads or default_threads(), "NUM_STREAMS": 1,
                  "PERFORMANCE_HINT": "LATENCY"}
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        try:
            self.compiled = self.core.compile_model(str(ir_file(path)), "CPU", config)
        except Exception as exc:
            raise InputError(f"OpenVINO cannot load the model: {str(exc)[:300]}", file=display,
                             fix=f"check the IR was written by OpenVINO {ov.__version__}") from None
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision_hint = hint.split("'")[1] if "'" in hint else hint
        self.measurement = {"runtime": "openvino", "runtime_version": ov.__version__.split("-")[0],
                            "provider": f"CPU plugin, inference precision hint {self.precision_hint}"
                                        + ("" if precision_hint else " (OpenVINO's default)"),
                            "inference_precision_hint": self.precision_hint,
                            "threads": config["INFERENCE_NUM_THREADS"], "machine": host_machine(),
                            "where": "host"}

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feed, share_inputs=True)   # synchronous: the feed outlives it
        return [result[o] for o in self.outputs]

    def exec_precisions(self) -> list[tuple[str, str, list[str]]]:
        """(layer type, precision it actually runs in, original op names) per executed layer."""
        rows = []
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            names = info["originalLayersNames"].astype(str)
            rows.append((info["layerType"].astype(str), info["runtimePrecision"].astype(str),
                         [n for n in names.split(",") if n]))
        return rows


def read_onnx(path: Path, display: str):
    """ONNX -> ov.Model through OpenVINO's ONNX frontend, constants folded (what convert_model
    does for an ONNX file, without its telemetry)."""
    ov = import_openvino()
    from openvino.passes import ConstantFolding, Manager

    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:
        raise ConversionError(f"OpenVINO cannot convert the ONNX model: {str(exc)[:400]}",
                              file=display, fix="check that every op is supported by OpenVINO "
                                                f"{ov.__version__.split('-')[0]}'s ONNX frontend") from None
    passes = Manager()
    passes.register_pass(ConstantFolding())
    passes.run_passes(model)
    return model


def save_ir(model, folder: Path) -> Path:
    ov = import_openvino()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ov.save_model(model, str(folder / IR_FILE), compress_to_fp16=False)   # float layers stay FP32
    return folder


def onnx_node_of(name: str, onnx_nodes: list[str]) -> str | None:
    """The ONNX node an OpenVINO op came from (the frontend keeps the name, adding '/suffix')."""
    best = None
    for node in onnx_nodes:
        if (name == node or name.startswith(node + "/")) and (best is None or len(node) > len(best)):
            best = node
    return best


def ov_ops_for(model, onnx_nodes: list[str]) -> dict[str, list[str]]:
    """ONNX compute node -> the OpenVINO compute ops it became."""
    out: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() in OV_COMPUTE:
            node = onnx_node_of(op.get_friendly_name(), onnx_nodes)
            if node is not None:
                out.setdefault(node, []).append(op.get_friendly_name())
    return out


def int8_nodes(runner: OpenVinoRunner, onnx_nodes: list[str]) -> list[str]:
    """The ONNX compute nodes whose layers the CPU plugin actually executes in INT8."""
    found = set()
    for layer, precision, names in runner.exec_precisions():
        if layer in EXEC_COMPUTE and precision in INT8_EXEC:
            for name in names:
                node = onnx_node_of(name, onnx_nodes)
                if node is not None:
                    found.add(node)
    return [n for n in onnx_nodes if n in found]


class OpenVinoTarget:
    id = "openvino"

    def runner(self, path: Path, threads: int | None = None, display: str = "",
               binding: dict | None = None) -> OpenVinoRunner:       # fed as the source model: no binding
        return OpenVinoRunner(path, threads, display)

    def compile(self, job: CompileJob) -> Compiled:
        from edgegate.targets.openvino_quantize import quantize_for_device

        threads = job.device.profile.threads or job.benchmark.threads
        fp32_dir = save_ir(read_onnx(job.source_path, job.display),
                           job.workdir / f"{job.name}.{job.device.id}.fp32.openvino")
        model = onnx.load(str(job.model_path), load_external_data=False)
        macs = node_macs(model)
        op_types = {n.name: n.op_type for n in model.graph.node}
        compute = [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and n.name]
        del model
        q = quantize_for_device(job, compute, macs, op_types,
                                lambda p: OpenVinoRunner(p, threads, job.display), fp32_dir)
        for row in q.blame:
            row.setdefault("op_type", op_types.get(row["node"]))
        notes = list(q.notes)
        fp32 = OpenVinoRunner(fp32_dir, threads, job.display)
        int8 = OpenVinoRunner(q.path, threads, job.display)
        feed = job.calibration.feed(0)
        timing = dict(warmup=3, repeats=20, min_time_s=0.2, max_time_s=2.0)
        pair = benchmark_pair(lambda: fp32.infer(feed), lambda: int8.infer(feed), **timing)
        timings = [{"config": "fp32", "inference_precision_hint": fp32.precision_hint,
                    "latency_p50_ms": round(pair.before.p50_ms, 4)},
                   {"config": "int8", "inference_precision_hint": int8.precision_hint,
                    "latency_p50_ms": round(pair.after.p50_ms, 4),
                    "speedup_ci95": [round(v, 3) for v in pair.speedup_ci95]}]
        default = OpenVinoRunner(fp32_dir, threads, job.display, precision_hint=None)
        if default.precision_hint != fp32.precision_hint:
            alt = benchmark_pair(lambda: fp32.infer(feed), lambda: default.infer(feed), **timing)
            timings.append({"config": "fp32", "inference_precision_hint": default.precision_hint,
                            "latency_p50_ms": round(alt.after.p50_ms, 4),
                            "note": "OpenVINO's default for FP32 on this CPU; not shipped: the FP32 "
                                    "baseline is stated and measured with the f32 hint"})
            notes.append(f"FP32 baseline measured with inference precision hint f32; under OpenVINO's "
                         f"default hint ({default.precision_hint}) it took {alt.after.p50_ms:.3f} ms "
                         f"vs {alt.before.p50_ms:.3f} ms")
        covered = int8_nodes(int8, compute)
        precision, artifact = "int8", q.path
        if pair.speedup_ci95[1] < 1.0 or not covered:
            why = ("no compute layer runs in INT8" if not covered else
                   f"INT8 was measured slower than FP32 here ({pair.after.p50_ms:.3f} ms vs "
                   f"{pair.before.p50_ms:.3f} ms)")
            notes.append(f"FP32 IR shipped: {why}")
            precision, covered = "fp32", []
            artifact = job.workdir / f"{job.name}.{job.device.id}.fp32-shipped.openvino"
            shutil.copytree(fp32_dir, artifact)
        else:
            final = job.workdir / f"{job.name}.{job.device.id}.int8.openvino"
            shutil.rmtree(final, ignore_errors=True)
            q.path.rename(final)
            artifact = final
        del int8, fp32, default
        total = sum(macs.get(n, 0) for n in compute)
        share = round(sum(macs.get(n, 0) for n in covered) / total, 4) if total else None
        kept = [{"node": n, "op_type": op_types.get(n),
                 "reason": q.kept.get(n, "runs in float on the OpenVINO CPU plugin (not quantized by "
                                         "NNCF's scheme)" if precision == "int8" else "FP32 IR shipped")}
                for n in compute if n not in covered]
        quant = {
            "method": q.method, "level": job.quantization.level,
            "preset": "performance (symmetric weights, asymmetric activations where needed)",
            "activation_type": "uint8/int8 (NNCF picks per layer)" if precision == "int8" else None,
            "weight_type": "int8" if precision == "int8" else None,
            "per_channel": True if precision == "int8" else None,
            "calibration_samples": q.calibration_samples,
            "ignored_scope": q.ignored_scope,
            "quantized_nodes": covered, "float_nodes": [k["node"] for k in kept],
            "kept_in_float": kept,
            "compute_nodes_quantized": len(covered), "compute_nodes_total": len(compute),
            "int8_mac_share": share,
            "precision_coverage": {"int8": share, "fp16": 0.0 if share is not None else None,
                                   "fp32": None if share is None else round(1 - share, 4)},
            "int8_measured_from": "the CPU plugin's execution graph (runtimePrecision per layer)",
            "macs_total": total, "blame": q.blame,
            "accuracy_control": q.accuracy_control,
            "timings": timings,
        }
        return Compiled(artifact=artifact, precision=precision, format="openvino-ir",
                        baseline=fp32_dir, quantization=quant, notes=notes)
