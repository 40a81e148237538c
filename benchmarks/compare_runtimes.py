"""ONNX Runtime vs OpenVINO on this host, side by side in one process, each with EdgeGate's best
configuration (ORT: the balanced precision search; OpenVINO: NNCF with accuracy control).

Models (built and trained here on scikit-learn's digits): the digits CNN of examples/digits.py and
a small transformer-like classifier (examples/quant_models.py). Both targets get the same
calibration samples (train split) and the same accuracy budget (1 pp, scored on the rest of the
train split); accuracy is measured on the held-out test split. Every ratio is from an
interleaved timing of the two artifacts on one input (batch 1). OpenVINO runs with the f32
inference precision hint (like with like); its FP32 model under OpenVINO's default hint (bf16
where the CPU supports it) is timed too.

    python benchmarks/compare_runtimes.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

import digits  # noqa: E402
import quant_models  # noqa: E402


def compile_with(target, src: Path, workdir: Path, calibration, evaluation, threads: int):
    import onnx

    from edgegate.config.load import Limit, builtin_profiles, resolve_devices
    from edgegate.config.schema import BenchmarkSpec, QuantizationSpec
    from edgegate.stages.analyze import analyze
    from edgegate.targets.base import CompileJob

    device = resolve_devices(builtin_profiles())["x86-cpu"]
    limits = {"max_accuracy_drop_pp": Limit("max_accuracy_drop_pp", 1.0, "benchmark", None)}
    device = type(device)(device.id, target.id, device.profile, limits, device.sources)
    workdir.mkdir(parents=True, exist_ok=True)
    job = CompileJob(model_path=src, source_path=src, info=analyze(onnx.load(str(src))),
                     calibration=calibration, evaluation=evaluation, device=device,
                     quantization=QuantizationSpec(level="balanced", search_time_s=60.0),
                     benchmark=BenchmarkSpec(threads=threads), workdir=workdir, display=src.name,
                     name=src.stem)
    return target.compile(job)


def accuracy(runner, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.array([np.asarray(runner.infer({"input": x[i:i + 1]})[0]).argmax() for i in range(len(x))])
    return float((pred == y).mean() * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller training and timing (CI smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from edgegate._deps import version_of
    from edgegate.data.sources import Dataset
    from edgegate.stages.benchmark import benchmark_pair
    from edgegate.targets.base import host_machine
    from edgegate.targets.onnxruntime import OnnxRuntimeTarget, OrtRunner
    from edgegate.targets.openvino import OpenVinoRunner, OpenVinoTarget

    x_train, y_train, x_test, y_test = digits.digits_data()
    n_cal = 100 if args.quick else 300
    n_search = 300 if args.quick else 900
    calibration = Dataset({"input": x_train[:n_cal]}, None, {"method": "minmax"})
    search_set = Dataset({"input": x_train[n_cal:n_cal + n_search]}, y_train[n_cal:n_cal + n_search],
                         {"metric": "top1"})
    timing = dict(warmup=3, repeats=20, min_time_s=0.3, max_time_s=3) if args.quick else \
        dict(warmup=10, repeats=100, min_time_s=2.0, max_time_s=20)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        models = quant_models.benchmark_models(folder, args.quick, outlier=False)
        print(f"built and trained {len(models)} models in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
        for name, fp32 in models.items():
            ort_c = compile_with(OnnxRuntimeTarget(), fp32, folder / f"ort-{name}", calibration,
                                 search_set, args.threads)
            ov_c = compile_with(OpenVinoTarget(), fp32, folder / f"ov-{name}", calibration,
                                search_set, args.threads)
            feed = {"input": x_test[:1]}
            ort_fp32, ort_q = OrtRunner(fp32, args.threads), OrtRunner(ort_c.artifact, args.threads)
            ov_fp32 = OpenVinoRunner(ov_c.baseline, args.threads)
            ov_fp32_default = OpenVinoRunner(ov_c.baseline, args.threads, precision_hint=None)
            ov_q = OpenVinoRunner(ov_c.artifact, args.threads)
            acc = {"ort fp32": accuracy(ort_fp32, x_test, y_test), "ort q": accuracy(ort_q, x_test, y_test),
                   "ov q": accuracy(ov_q, x_test, y_test)}
            for label, a, b, note in (
                    ("ORT FP32 -> OpenVINO FP32 (f32)", ort_fp32, ov_fp32, ""),
                    (f"ORT FP32 -> OpenVINO FP32 ({ov_fp32_default.precision_hint})", ort_fp32,
                     ov_fp32_default, "OpenVINO's default hint"),
                    ("ORT FP32 -> ORT best", ort_fp32, ort_q, f"{ort_c.precision}, "
                     f"acc drop {acc['ort fp32'] - acc['ort q']:.2f} pp"),
                    ("OpenVINO FP32 (f32) -> OpenVINO best", ov_fp32, ov_q, f"{ov_c.precision}, "
                     f"acc drop {acc['ort fp32'] - acc['ov q']:.2f} pp"),
                    ("ORT best -> OpenVINO best", ort_q, ov_q, f"{ov_c.precision} vs {ort_c.precision}")):
                pair = benchmark_pair(lambda: a.infer(feed), lambda: b.infer(feed), **timing)
                rows.append((name, label, pair.before.p50_ms, pair.after.p50_ms, pair.speedup,
                             pair.speedup_ci95, note))
    print(f"# ONNX Runtime vs OpenVINO, each with EdgeGate's best configuration "
          f"({'quick' if args.quick else 'full'} run)")
    print(f"# {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} · {host_machine()} · "
          f"onnxruntime {version_of('onnxruntime')} · openvino {version_of('openvino')} · "
          f"nncf {version_of('nncf')} · {args.threads} thread(s) · batch 1")
    print("# ratio = p50 of the first / p50 of the second (>1: the second, after the arrow, is faster); interleaved")
    head = f"{'model':<17} {'comparison':<38} {'first ms':>9} {'second ms':>9} {'ratio':>7} {'95% CI':>13}  notes"
    print(head)
    print("-" * len(head))
    for name, label, a_ms, b_ms, ratio, ci, note in rows:
        print(f"{name:<17} {label:<38} {a_ms:>9.3f} {b_ms:>9.3f} {ratio:>6.2f}x "
              f"{ci[0]:>6.2f}-{ci[1]:<6.2f} {note}")


if __name__ == "__main__":
    main()
