"""Measuring an artifact, written once: the gate, the device runner (`edgegate measure`), the
base-commit timing and the candidate runtimes' head-to-head all call these two functions, so a
new number (a fidelity metric, memory, tail latency) is added in one place.

- ``time_artifacts(before, after, feed, bench)``: two runners timed interleaved (one harness).
- ``measure_artifact(runner, baseline, ...)``: timing against the FP32 baseline (or the artifact
  alone when the baseline cannot run here): p50/p90, p99 (from enough runs) and batch-1
  throughput; then the artifact's outputs on the evaluation set, scored against the reference
  outputs (task fidelity) and the labels (accuracy, paired interval); then, given ``loads``, peak
  memory and cold load time of the artifact and of the FP32 model, each loaded in a fresh
  process (stages/memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgegate.config.schema import BenchmarkSpec
from edgegate.data.sources import Dataset
from edgegate.report.model import IDENTICAL_OUTPUTS, finite
from edgegate.stages.benchmark import PairTiming, benchmark_one, benchmark_pair, p99_gap
from edgegate.stages.evaluate import collect_outputs, pick_output, score, stacked
from edgegate.stages.fidelity import TaskInfo, task_fidelity
from edgegate.stages.memory import Loadable

FIDELITY_KEYS = ("top1_agreement", "mask_iou", "mask_agreement", "box_f1", "box_f1_detections_fp32", "cosine_similarity",
                 "sqnr_db", "sqnr_db_tensor", "sqnr_worst_output", "sqnr_worst_channel")
TIMING_KEYS = ("latency_p99_ms", "throughput_ips")
FP32_TIMING_KEYS = ("latency_p50_ms_before", "speedup", "latency_p99_ms_fp32", "throughput_ips_fp32")
MEMORY_KEYS = ("peak_memory_mb", "load_time_ms")
FP32_MEMORY_KEYS = ("peak_memory_mb_fp32", "load_time_ms_fp32", "memory_growth_pct")
ENERGY_KEYS = ("energy_mj_per_inference", "power_mw_mean")


def time_artifacts(before, after, feed: dict, bench: BenchmarkSpec, seed: int = 0) -> PairTiming:
    """``before`` and ``after`` (runners with ``infer(feed)``) timed interleaved."""
    return benchmark_pair(lambda: before.infer(feed), lambda: after.infer(feed),
                          warmup=bench.warmup, repeats=bench.repeats, min_time_s=bench.min_time_s,
                          max_time_s=bench.max_time_s, seed=seed)


@dataclass(frozen=True)
class Scoring:
    """What the evaluation compares: the reference outputs, the task, and the labelled metric."""

    task: TaskInfo
    ref_outputs: list | None          # per output, per sample (None: run the baseline for them)
    output_names: list[str]
    metric: str | None                # top1 | top5 | mse | fidelity | module:function
    which: int | str = 0              # the output the labelled metric reads
    accuracy_before: float | None = None
    root: Path | None = None          # where a module:function metric is imported from


@dataclass(frozen=True)
class Measured:
    metrics: dict                                  # Metrics fields measured here
    not_measured: dict[str, str] = field(default_factory=dict)
    pair: PairTiming | None = None                 # None: the artifact was timed alone
    memory: dict | None = None                     # how peak memory and load time were taken


def timing_gaps(metrics: dict, not_measured: dict) -> None:
    """A p99 missing for too few runs gets its reason; one measured since (pooled) loses it."""
    runs = metrics.get("latency_runs") or 0
    for key in ("latency_p99_ms", "latency_p99_ms_fp32"):
        if metrics.get(key) is None and (key == "latency_p99_ms" or "speedup" in metrics):
            not_measured.setdefault(key, p99_gap(runs))
        elif metrics.get(key) is not None:
            not_measured.pop(key, None)


def measure_artifact(runner, baseline, evaluation: Dataset, bench: BenchmarkSpec,
                     scoring: Scoring, display: str, progress_step=lambda text: None,
                     loads: tuple[Loadable, Loadable | None] | None = None,
                     footprints=None) -> Measured:
    """Time ``runner`` (against ``baseline`` when it is not None) and evaluate it; with
    ``loads`` (the artifact and the FP32 model as a fresh process loads them; the FP32 one None
    when it does not run here) also their peak memory and cold load time, each taken once per
    run when ``footprints`` (the run's stages.memory.Footprints) is given."""
    metrics: dict = {}
    not_measured: dict[str, str] = {}
    feed = evaluation.feed(0)
    pair = None
    if baseline is not None:
        progress_step("timing FP32 vs the artifact interleaved")
        pair = time_artifacts(baseline, runner, feed, bench)
        metrics.update(pair.metrics())
    else:
        progress_step("timing the artifact (the FP32 model does not run here)")
        t = benchmark_one(lambda: runner.infer(feed), warmup=bench.warmup, repeats=bench.repeats,
                          min_time_s=bench.min_time_s, max_time_s=bench.max_time_s)
        metrics.update(latency_p50_ms_after=t.p50_ms, latency_p90_ms_after=t.p90_ms,
                       latency_p50_ci95_ms_after=list(t.ci95_ms), latency_runs=t.runs,
                       **t.metrics())
    timing_gaps(metrics, not_measured)
    for key in ENERGY_KEYS:              # stages/power.py, on a device runner only
        not_measured[key] = ("measured only by 'edgegate measure' on a device runner with a power "
                             "source (tegrastats, RAPL, a command)")
    progress_step(f"evaluating on {len(evaluation)} samples")
    outputs = collect_outputs(runner.infer, evaluation, display)
    ref = scoring.ref_outputs
    if ref is None and baseline is not None:
        ref = collect_outputs(baseline.infer, evaluation, display)
    metrics.update(task=scoring.task.task, task_why=scoring.task.why)
    if ref is not None:
        fid, why = task_fidelity(scoring.task, ref, outputs)
        metrics["primary_metric"] = fid.get("primary_metric")
        metrics.update({k: finite(fid.get(k)) for k in FIDELITY_KEYS})
        not_measured.update(why)
        for key in ("sqnr_db", "sqnr_db_tensor"):
            if fid.get(key) == float("inf"):
                not_measured[key] = IDENTICAL_OUTPUTS
    else:
        for key in FIDELITY_KEYS:
            not_measured[key] = "the FP32 model does not run here: nothing to compare against"
    _accuracy(metrics, not_measured, outputs, ref, evaluation, scoring, display)
    memory = None
    if loads is None:
        for key in (*MEMORY_KEYS, *FP32_MEMORY_KEYS):
            not_measured[key] = "not measured by this caller (no fresh-process load given)"
    else:
        progress_step("peak memory and cold load time, each model in a fresh process")
        memory = measure_memory(loads[0], loads[1], feed, metrics, not_measured, footprints)
    return Measured(metrics, not_measured, pair, memory)


def measure_memory(artifact: Loadable, fp32: Loadable | None, feed: dict, metrics: dict,
                   not_measured: dict, footprints=None) -> dict:
    """Peak memory and cold load time of the artifact and of the FP32 model (fresh processes,
    one after the other) into ``metrics``; the record of how they were taken is returned. A
    measurement that fails is reported not measured with the reason, never given numbers."""
    from edgegate.errors import EdgeGateError
    from edgegate.stages.memory import footprint

    record: dict = {"process": "a fresh Python process per model, loaded cold, then run on one "
                               "evaluation sample",
                    "peak": "RSS high-water mark minus the process's RSS before loading (the "
                            "runtime already imported); 1 MB = 1e6 bytes",
                    "load": "runner construction (session creation / graph compile) in that "
                            "process; the file may be in the OS page cache"}
    for role, model, keys in (("artifact", artifact, MEMORY_KEYS), ("fp32", fp32, FP32_MEMORY_KEYS)):
        suffix = "" if role == "artifact" else "_fp32"
        if model is None:
            for key in keys:
                not_measured[key] = "the FP32 model does not run here"
            continue
        try:
            got = footprints.footprint(model, feed) if footprints is not None else footprint(model, feed)
        except EdgeGateError as exc:
            for key in keys:
                not_measured[key] = f"the fresh-process measurement failed: {exc.message}"[:300]
            record[role] = {"error": exc.message[:300]}
            continue
        metrics["peak_memory_mb" + suffix] = got["peak_memory_mb"]
        metrics["load_time_ms" + suffix] = got["load_time_ms"]
        record[role] = {k: v for k, v in got.items() if k not in ("peak_memory_mb", "load_time_ms")}
        record["method"] = got["method"]
        record["inferences"] = got["inferences"]
    peak, peak_fp32 = metrics.get("peak_memory_mb"), metrics.get("peak_memory_mb_fp32")
    if peak is not None and peak_fp32:
        metrics["memory_growth_pct"] = (peak / peak_fp32 - 1.0) * 100.0
    elif peak is not None and peak_fp32 is not None:
        not_measured["memory_growth_pct"] = "the FP32 model's peak memory is 0 MB: no ratio"
    return record


def _accuracy(metrics: dict, not_measured: dict, outputs, ref, evaluation: Dataset,
              scoring: Scoring, display: str) -> None:
    labels = evaluation.labels
    if labels is None or scoring.metric in (None, "fidelity"):
        for key in ("accuracy_after", "accuracy_drop_pp"):
            not_measured[key] = "no labelled evaluation data"
        return
    after = score(scoring.metric, stacked(pick_output(outputs, scoring.which, scoring.output_names,
                                                      display)), labels, scoring.root)
    metrics["accuracy_after"] = after
    if scoring.metric not in ("top1", "top5"):
        not_measured["accuracy_drop_pp"] = f"metric '{scoring.metric}' is not a percentage"
        return
    if scoring.accuracy_before is None:
        return
    metrics["accuracy_drop_pp"] = scoring.accuracy_before - after
    if ref is None:
        metrics.update(accuracy_drop_ci95_pp=None, discordant_samples=None)
        not_measured["accuracy_drop_ci95_pp"] = "the FP32 model does not run here"
        return
    from edgegate.stages.stats import paired_accuracy   # paired 95% interval of the drop

    metrics.update(paired_accuracy(scoring.metric, ref, outputs, scoring.which,
                                   scoring.output_names, labels, display))
