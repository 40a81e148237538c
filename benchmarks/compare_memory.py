"""EdgeGate's peak-memory figure next to two independent readings of the same child process.

Per model (the demo's digits CNN, trained here; PaddleOCR's PP-OCRv4 recognizer and detector,
pretrained, from the rapidocr-onnxruntime wheel as in real_models.py), ``edgegate run`` gates it
for ``x86-cpu``; report.json gives EdgeGate's numbers for the shipped INT8 artifact and for the
FP32 model (``peak_memory_mb``, ``peak_memory_mb_fp32``). Then, for each of the two, the very
child EdgeGate uses (``python -m edgegate.trust.isolation`` running ``stages.memory._child``) is run
again under ``/usr/bin/time -v`` while this process samples its RSS with psutil every 1 ms:

- the peak RSS of that child as EdgeGate reads it (kernel VmHWM) vs GNU time's "Maximum
  resident set size" (the kernel's rusage of the same process) vs the highest psutil sample;
- EdgeGate's peak above the baseline vs GNU time's peak of that child minus GNU time's peak of
  a twin child that does everything up to the baseline and stops (the same imports, no load).

Ratios are EdgeGate / other: 1.00 is agreement.

    python benchmarks/compare_memory.py [--quick] [--only NAME ...] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "examples"), str(HERE)]

TIME = "/usr/bin/time"


def _until_baseline(target, path, threads, display, binding, feed, runs):
    """The memory child's steps up to its baseline (stages/memory.py ``_child``), then stop."""
    import gc

    from edgegate.stages.memory import _import_runtime, _status_bytes
    from edgegate.targets import TARGETS, load_target

    load_target(target)
    gc.collect()
    _import_runtime(TARGETS[target].runtime, TARGETS[target].extra)
    gc.collect()
    return {"rss_mb": (_status_bytes("VmRSS") or 0) / 1e6}


def child_under_time(ref: str, args: tuple) -> tuple[dict, float, float]:
    """Run ``ref(*args)`` as EdgeGate's isolated child under GNU time, sampling its RSS every
    1 ms: (the child's result, GNU time's max RSS in MB, the highest psutil sample in MB)."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="edgegate-memcheck-") as tmp:
        payload, result = Path(tmp) / "payload.pkl", Path(tmp) / "result.pkl"
        payload.write_bytes(pickle.dumps((ref, args), protocol=pickle.HIGHEST_PROTOCOL))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}
        proc = subprocess.Popen([TIME, "-v", sys.executable, "-m", "edgegate.trust.isolation", str(payload),
                                 str(result)], stderr=subprocess.PIPE, text=True, env=env)
        sampled = 0
        timer = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in timer.children(recursive=True):
                    sampled = max(sampled, p.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.001)
        err = proc.stderr.read()
        proc.wait()
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
        if proc.returncode != 0 or not found or not result.is_file():
            raise RuntimeError(f"child failed ({proc.returncode}): {err[-500:]}")
        status, value = pickle.loads(result.read_bytes())
        if status != "ok":
            raise RuntimeError(f"child error: {value}")
        return value, int(found.group(1)) * 1024 / 1e6, sampled / 1e6


def digits_case(folder: Path, quick: bool):
    """The demo's model: examples/digits.py's CNN (width 32), trained here."""
    import digits
    from real_models import Case

    model, acc = digits.train_cnn(seed=0, epochs=2 if quick else 6)
    path = digits.export_onnx(model, folder / "digits.onnx")
    x_train, _, x_test, y_test = digits.digits_data()
    return Case("digits-cnn", "built here (examples/digits.py)", "classifier", path,
                {"input": x_train[:200]}, {"input": x_test[:300]}, y_test[:300],
                f"scikit-learn digits, 32x32 (FP32 accuracy {acc:.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--repeats", type=int, default=3, help="children per model and tool")
    args = parser.parse_args()
    if not Path(TIME).is_file():
        sys.exit(f"{TIME} is not installed (apt-get install time): nothing to compare against")

    import real_models

    settings = real_models.Settings(quick=args.quick, threads=2)
    builders = {"digits-cnn": digits_case, "ocr-rec": real_models.ocr_rec, "ocr-det": real_models.ocr_det}
    rows = []
    for name, build in builders.items():
        if args.only and name not in args.only:
            continue
        work = Path(tempfile.mkdtemp(prefix=f"edgegate-mem-{name}-"))
        try:
            if name == "digits-cnn":
                case = build(work, args.quick)
            else:
                case = build(work, *settings.samples, args.quick)
            report, seconds = real_models.gate(case, work, settings, ["x86-cpu"])
            (model,) = report["models"]
            (r,) = model["results"]
            m = r["metrics"]
            artifact = work / "repo" / "out" / r["artifact"]["path"]
            feed = {k: v[:1] for k, v in case.evaluation.items()}
            gated = {"artifact": (artifact, m["peak_memory_mb"], r["artifact"]["precision"]),
                     "fp32": (work / "repo" / "models" / f"{case.name}.onnx", m["peak_memory_mb_fp32"],
                              "fp32")}
            for role, (path, gate_mb, precision) in gated.items():
                call = ("onnxruntime", str(path), 2, path.name, None, feed, 10)
                for i in range(args.repeats):
                    got, time_mb, psutil_mb = child_under_time("edgegate.stages.memory:_child", call)
                    _, base_time_mb, _ = child_under_time("compare_memory:_until_baseline", call)
                    rows.append(dict(model=name, role=role, precision=precision, gate_mb=gate_mb,
                                     peak_mb=got["peak_memory_mb"], peak_rss_mb=got["peak_rss_mb"],
                                     time_rss_mb=time_mb, psutil_rss_mb=psutil_mb,
                                     time_delta_mb=time_mb - base_time_mb, gate_s=seconds,
                                     method=got["method"]))
                    print(json.dumps(rows[-1]), flush=True)
        except Exception as exc:            # one model failing does not stop the others
            print(f"{name}: {type(exc).__name__}: {str(exc)[:400]}", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("model      | model         | gate's peak (MB) | this child's peak (MB) | peak RSS: EdgeGate / time -v | "
          "EdgeGate / psutil 1 ms | peak above baseline: EdgeGate / (time -v minus twin)")
    print("-----------|---------------|------------------|------------------------|------------------------------|"
          "------------------------|-----------------------------------------------------")
    for row in rows:
        label = "FP32" if row["role"] == "fp32" else f"artifact {row['precision']}"
        print(f"{row['model']:<10} | {label:<13} | {row['gate_mb']:>16.2f} | "
              f"{row['peak_mb']:>22.2f} | {row['peak_rss_mb'] / row['time_rss_mb']:>28.3f} | "
              f"{row['peak_rss_mb'] / row['psutil_rss_mb']:>22.3f} | "
              f"{row['peak_mb'] / row['time_delta_mb']:>8.3f} ({row['peak_mb']:.2f} vs "
              f"{row['time_delta_mb']:.2f} MB)")
    by_model: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], {}).setdefault(row["role"], []).append(row["peak_mb"])
    print()
    for name, roles in by_model.items():
        if "artifact" in roles and "fp32" in roles:
            a, f = float(np.median(roles["artifact"])), float(np.median(roles["fp32"]))
            print(f"{name}: INT8 artifact {a:.2f} MB vs FP32 {f:.2f} MB above the baseline "
                  f"(median of {len(roles['fp32'])} children each): ratio {a / f:.3f}")
    import platform

    from edgegate.targets.base import cpu_name

    print(f"\n{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} cores; "
          f"method: {rows[0]['method'] if rows else '?'}; {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
