"""ONNX Runtime on the CPU: static INT8 (QDQ) with the activation type measured, not assumed."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import onnx

from edgegate.errors import InputError
from edgegate.stages.analyze import node_macs
from edgegate.stages.benchmark import benchmark_pair
from edgegate.stages.quantize import quantize
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

    def runner(self, path: Path, threads: int | None = None, display: str = "") -> OrtRunner:
        return OrtRunner(path, threads, display)

    def compile(self, job: CompileJob) -> Compiled:
        spec = job.quantization
        method = spec.calibration_method or job.calibration.info.get("method") or "minmax"
        cache = job.workdir / f"calibration-{method}.json"
        threads = job.device.profile.threads or job.benchmark.threads
        results = []
        for act in _candidates(spec.activation_type):
            out = job.workdir / f"{job.name}.{job.device.id}.int8-a{act[0]}8.onnx"
            q = quantize(job.model_path, out, job.calibration, activation_type=act,
                         weight_type=spec.weight_type, per_channel=spec.per_channel,
                         method=method, exclude=spec.exclude_nodes, op_types=spec.op_types,
                         cache=cache, display=job.display)
            results.append(q)
        chosen = results[0]
        timings = []
        if len(results) == 2:
            feed = job.calibration.feed(0)
            first = OrtRunner(results[0].path, threads, job.display)
            second = OrtRunner(results[1].path, threads, job.display)
            pair = benchmark_pair(lambda: first.infer(feed), lambda: second.infer(feed),
                                  warmup=3, repeats=20, min_time_s=0.3, max_time_s=5.0)
            timings = [{"activation_type": results[0].activation_type,
                        "latency_p50_ms": pair.before.p50_ms},
                       {"activation_type": results[1].activation_type,
                        "latency_p50_ms": pair.after.p50_ms}]
            if pair.after.p50_ms < pair.before.p50_ms:
                chosen = results[1]
            for other in results:
                if other is not chosen:
                    other.path.unlink(missing_ok=True)
        macs = node_macs(onnx.load(str(job.model_path), load_external_data=False))
        total = sum(macs.values())
        int8_macs = sum(macs.get(n, 0) for n in chosen.quantized_nodes)
        quant = {
            "method": "onnxruntime.quantize_static (QDQ)",
            "activation_type": chosen.activation_type, "weight_type": chosen.weight_type,
            "per_channel": chosen.per_channel, "calibration_method": chosen.calibration_method,
            "calibration_samples": len(job.calibration),
            "activation_type_candidates": timings,
            "quantized_nodes": chosen.quantized_nodes,
            "float_nodes": chosen.float_nodes,
            "kept_in_float": [{"node": n, "reason": "excluded in edgegate.yml"} for n in chosen.excluded],
            "compute_nodes_quantized": len(chosen.quantized_nodes),
            "compute_nodes_total": len(chosen.quantized_nodes) + len(chosen.float_nodes),
            "int8_mac_share": (int8_macs / total) if total else None,
            "macs_total": total,
        }
        final = job.workdir / f"{job.name}.{job.device.id}.int8.onnx"
        chosen.path.replace(final)
        notes = []
        if timings:
            mine = next(t for t in timings if t["activation_type"] == chosen.activation_type)
            other = next(t for t in timings if t is not mine)
            notes.append(f"{chosen.activation_type} activations chosen by measurement here: "
                         f"{mine['latency_p50_ms']:.3f} ms vs {other['latency_p50_ms']:.3f} ms "
                         f"for {other['activation_type']}")
        return Compiled(artifact=final, precision="int8", format="onnx", baseline=job.source_path,
                        quantization=quant, notes=notes)
