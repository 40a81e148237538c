"""EdgeGate `balanced` vs plain onnxruntime quantize_static defaults, side by side, in one run.

Models (built and trained here on scikit-learn's digits): the digits CNN of examples/digits.py,
the same CNN with a function-preserving outlier rescale in its head (examples/quant_models.py),
and a small transformer-like classifier. Both quantizers get the same calibration samples (train
split); EdgeGate's search scores candidates on the rest of the train split; size, speedup
(interleaved with FP32 on this host) and accuracy drop are measured on the held-out test split.

    python benchmarks/compare_quantize.py [--quick] [--threads N]
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


def accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from edgegate.targets.onnxruntime import OrtRunner

    out = OrtRunner(path, 2).infer({"input": x})[0]
    return float((out.argmax(1) == y).mean() * 100)


def ort_defaults(src: Path, dst: Path, calibration) -> Path:
    """quantize_static with every default (QDQ, per-tensor, S8S8, MinMax)."""
    import contextlib
    import io

    from onnxruntime.quantization import quantize_static

    from edgegate.stages.quantize import CalibrationReader

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(src), str(dst), CalibrationReader(calibration))
    return dst


def edgegate_balanced(src: Path, workdir: Path, calibration, evaluation, search_time_s: float):
    import onnx

    from edgegate.config.load import builtin_profiles, resolve_devices
    from edgegate.config.schema import BenchmarkSpec, QuantizationSpec
    from edgegate.stages.analyze import analyze
    from edgegate.targets.base import CompileJob
    from edgegate.targets.onnxruntime import OnnxRuntimeTarget

    device = resolve_devices(builtin_profiles())["x86-cpu"]
    job = CompileJob(model_path=src, source_path=src, info=analyze(onnx.load(str(src))),
                     calibration=calibration, evaluation=evaluation, device=device,
                     quantization=QuantizationSpec(level="balanced", search_time_s=search_time_s),
                     benchmark=BenchmarkSpec(threads=2), workdir=workdir, display=src.name,
                     name=src.stem)
    return OnnxRuntimeTarget().compile(job)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller training and timing (CI smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnxruntime

    from edgegate.data.sources import Dataset
    from edgegate.stages.benchmark import benchmark_pair
    from edgegate.targets.base import host_machine
    from edgegate.targets.onnxruntime import OrtRunner

    x_train, y_train, x_test, y_test = digits.digits_data()
    n_cal = 100 if args.quick else 300
    calibration = Dataset({"input": x_train[:n_cal]}, None, {"method": "minmax"})
    search_set = Dataset({"input": x_train[n_cal:n_cal + (300 if args.quick else 900)]},
                         y_train[n_cal:n_cal + (300 if args.quick else 900)], {"metric": "top1"})
    timing = dict(warmup=3, repeats=20, min_time_s=0.3, max_time_s=3) if args.quick else \
        dict(warmup=10, repeats=100, min_time_s=2.0, max_time_s=20)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        models = quant_models.benchmark_models(folder, args.quick, outlier=True)
        print(f"built and trained {len(models)} models in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
        for name, fp32 in models.items():
            work = folder / f"work-{name}"
            work.mkdir()
            acc_fp32 = accuracy(fp32, x_test, y_test)
            plain = ort_defaults(fp32, folder / f"{name}.ort-defaults.onnx", calibration)
            t0 = time.monotonic()
            compiled = edgegate_balanced(fp32, work, calibration, search_set,
                                         20.0 if args.quick else 120.0)
            search_s = time.monotonic() - t0
            feed = {"input": x_test[:1]}
            base = OrtRunner(fp32, args.threads)
            for label, path, extra in (("onnxruntime defaults", plain, ""),
                                       ("edgegate balanced", compiled.artifact,
                                        f"{compiled.precision}, {search_s:.0f} s search, "
                                        f"{len(compiled.quantization.get('kept_in_float', []))} layer(s) in float")):
                runner = OrtRunner(path, args.threads)
                pair = benchmark_pair(lambda: base.infer(feed), lambda: runner.infer(feed), **timing)
                rows.append((name, label, fp32.stat().st_size / path.stat().st_size, pair.speedup,
                             pair.speedup_ci95, acc_fp32 - accuracy(path, x_test, y_test), acc_fp32, extra))
    print(f"# EdgeGate balanced vs onnxruntime quantize_static defaults "
          f"({'quick' if args.quick else 'full'} run)")
    print(f"# {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} · {host_machine()} · "
          f"onnxruntime {onnxruntime.__version__} · {args.threads} thread(s) · batch 1 · "
          f"accuracy on {len(y_test)} held-out digits")
    head = f"{'model':<17} {'quantizer':<21} {'size ratio':>10} {'speedup':>8} {'95% CI':>13} " \
           f"{'FP32 acc %':>10} {'acc drop pp':>11}  notes"
    print(head)
    print("-" * len(head))
    for name, label, ratio, speedup, ci, drop, acc, extra in rows:
        print(f"{name:<17} {label:<21} {ratio:>9.2f}x {speedup:>7.2f}x "
              f"{ci[0]:>6.2f}-{ci[1]:<6.2f} {acc:>10.2f} {drop:>11.2f}  {extra}")


if __name__ == "__main__":
    main()
