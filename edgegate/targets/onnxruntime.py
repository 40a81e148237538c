"""ONNX Runtime on the CPU: static INT8 (QDQ) with the activation type measured, not assumed."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from edgegate.errors import InputError
from edgegate.stages.quantize import COMPUTE_OPS
from edgegate.stages.search import PrecisionSearch
from edgegate.targets.base import CompileJob, Compiled, host_machine


class OrtRunner:
    def __init__(self, path: Path, threads: int | None = None, display: str = ""):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise InputError(f"ONNX Runtime cannot load the model: {str(exc)[:300]}", file=display,
                             fix="check the model's opset and ops are supported by ONNX Runtime "
                                 f"{ort.__version__}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.measurement = {"runtime": "onnxruntime", "runtime_version": ort.__version__,
                            "provider": "CPUExecutionProvider",
                            "threads": opts.intra_op_num_threads, "machine": host_machine(),
                            "where": "host"}

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feed)


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _candidates(setting: str) -> list[str]:
    if setting != "auto":
        return [setting]
    # ONNX Runtime's guidance: U8S8 on x86-64, S8S8 on ARM. Both are measured; the faster ships.
    first = "int8" if platform.machine().lower() in ("arm64", "aarch64") else "uint8"
    return [first, "int8" if first == "uint8" else "uint8"]


class OnnxRuntimeTarget:
    id = "onnxruntime"

    def runner(self, path: Path, threads: int | None = None, display: str = "",
               binding: dict | None = None) -> OrtRunner:       # fed as the source model: no binding
        return OrtRunner(path, threads, display)

    def compile(self, job: CompileJob) -> Compiled:
        """The precision search (stages/search.py) picks the configuration; see its levels."""
        spec = job.quantization
        threads = job.device.profile.threads or job.benchmark.threads
        search = PrecisionSearch(
            model_path=job.model_path, baseline_path=job.source_path, calibration=job.calibration,
            evaluation=job.evaluation, spec=spec, limits=dict(job.device.limits),
            workdir=job.workdir, make_runner=lambda p: OrtRunner(p, threads, job.display),
            activation_types=_candidates(spec.activation_type), display=job.display, task=job.task)
        result = search.run()
        chosen = result.chosen
        cfg = chosen.cfg
        total = sum(result.macs.values())
        coverage = result.coverage()
        compute = [n for n, t in result.op_types.items() if t in COMPUTE_OPS]
        float_nodes = [n for n in compute if n not in result.int8_nodes]
        act_timings = [{"activation_type": c["config"]["activation_type"],
                        "latency_p50_ms": c["latency_p50_ms"]}
                       for c in result.candidates if c["stage"] == "activation_type"]
        kept = [{"node": n, "op_type": result.op_types.get(n), "reason": why}
                for n, why in result.kept.items()]
        floor = result.extra.get("fp32_floor") or {}
        fallback = result.extra.get("fallback") or {}
        method = _METHOD_NAMES[cfg.precision]
        if cfg.precision == "fp32" and floor.get("optimized"):
            method = _FLOOR_METHOD
        quant = {
            "method": method, "level": result.level,
            "activation_type": cfg.activation_type if cfg.precision == "int8" else None,
            "weight_type": spec.weight_type if cfg.precision.startswith("int8") else None,
            "per_channel": cfg.per_channel if cfg.precision == "int8" else None,
            "calibration_method": cfg.method if cfg.precision == "int8" else None,
            "calibration_samples": len(job.calibration),
            "activation_type_candidates": act_timings,
            "quantized_nodes": result.int8_nodes, "float_nodes": float_nodes,
            "kept_in_float": kept,
            "compute_nodes_quantized": len(result.int8_nodes),
            "compute_nodes_total": len(compute),
            "int8_mac_share": coverage["int8"], "precision_coverage": coverage,
            "macs_total": total, "blame": result.blame,
            # a plain sentence when the INT8 configuration lost to something faster and faithful
            "why_not_int8": fallback.get("why"),
            "search": {"level": result.level, "budget": result.budget.to_dict(), "met": result.met,
                       "verdict": result.verdict, "time_budget_s": spec.search_time_s,
                       "elapsed_s": search.elapsed_s(), "timed_out": search.timed_out_at is not None,
                       "scored_on_samples": len(search.scorer.data),
                       "accuracy_fp32": search.scorer.accuracy_fp32,
                       "candidates": result.candidates, **result.extra},
        }
        precision = _precision(cfg.precision, coverage, chosen.path)
        if precision == "fp32":
            check_fp32_artifact(chosen.path, job.model_path, job.calibration, job.display, threads)
        final = job.workdir / f"{job.name}.{job.device.id}.{precision}.onnx"
        chosen.path.replace(final)
        notes = []
        if precision == "mixed":
            notes.append("the artifact holds quantization ops but no compute layer runs quantized "
                         "(labelled mixed, not fp32)")
        if len(act_timings) == 2:
            mine = next(t for t in act_timings if t["activation_type"] == cfg.activation_type) \
                if cfg.precision == "int8" else None
            if mine:
                other = next(t for t in act_timings if t is not mine)
                notes.append(f"{mine['activation_type']} activations chosen by measurement here: "
                             f"{mine['latency_p50_ms']:.3f} ms vs {other['latency_p50_ms']:.3f} ms "
                             f"for {other['activation_type']}")
        if fallback.get("why"):
            notes.append(fallback["why"])
        return Compiled(artifact=final, precision=precision, format="onnx", baseline=job.source_path,
                        quantization=quant, notes=notes)


_METHOD_NAMES = {"int8": "onnxruntime.quantize_static (QDQ)",
                 "int8-dynamic": "onnxruntime.quantize_dynamic (MatMul/Gemm)",
                 "fp16": "onnxconverter-common float16 (FP32 inputs/outputs)",
                 "fp32": "none (FP32 kept)"}
_FLOOR_METHOD = "none (FP32 kept), graph optimized offline by ONNX Runtime (ORT_ENABLE_EXTENDED)"


# Ops that mean an artifact computes in integers somewhere (QDQ pairs, dynamic quantization)
INTEGER_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
               "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul",
               "QLinearConv", "QGemm", "QAttention"}
FP32_CHECK_SAMPLES = 64


def integer_ops(path: Path) -> list[str]:
    """The integer/quantization op types in a model (subgraphs included)."""
    import onnx

    found: set[str] = set()

    def walk(graph):
        for node in graph.node:
            if node.op_type in INTEGER_OPS or node.op_type.startswith("QLinear"):
                found.add(node.op_type)
            for a in node.attribute:
                for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                    walk(g)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return sorted(found)


def _precision(kind: str, coverage: dict, artifact: Path | None = None) -> str:
    """The artifact's precision label, from what the artifact holds: int8 when compute layers run
    quantized (layers kept in float show in precision_coverage), mixed when it holds
    quantization ops but no compute layer is quantized, fp32 only for a float graph."""
    quantized = bool(integer_ops(artifact)) if artifact is not None else kind.startswith("int8")
    if quantized:
        return "int8" if coverage.get("int8") else "mixed"
    if kind == "fp16":
        return "fp16"
    return "fp32"


def check_fp32_artifact(artifact: Path, reference: Path, calibration, display: str = "",
                        threads: int | None = None) -> None:
    """A bug guard: an artifact labelled FP32 computes what the FP32 optimized model computes
    (float tolerance, on up to FP32_CHECK_SAMPLES calibration samples), or EdgeGate stops."""
    from edgegate.errors import InternalError
    from edgegate.stages.faithful import compare

    ops = integer_ops(artifact)
    n = min(len(calibration), FP32_CHECK_SAMPLES)
    why = (f"it holds {', '.join(ops)}" if ops else
           compare(reference, artifact, (calibration.feed(i) for i in range(n)), threads))
    if why:
        raise InternalError(f"the ONNX Runtime artifact labelled fp32 for {display or artifact.name} "
                            f"is not the FP32 model: {why}", file=display,
                            fix="this is a bug in EdgeGate; please report it with report.json")
