"""``edgegate measure``: run a partial report's artifacts on the machine this runs on (a device
runner: a Raspberry Pi, a Jetson, a Mac) and write a partial report whose numbers were measured
there. ``edgegate merge`` then prefers these results over the host's for the same model x device.

What is re-measured on the device: latency (p50/p90 with interval, p99, batch-1 throughput;
interleaved against the FP32 model when the device can run it: the repository's ONNX model for
the onnxruntime target), peak memory and cold load time (each model in a fresh process on the
device), and the accuracy and fidelity of the artifact on the repository's evaluation data. What
the device cannot measure keeps the host's number and is listed in ``measurement.kept_from_host``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgegate.config.load import LoadedConfig, Limit, ResolvedDevice, policy_stack, resolve_devices
from edgegate.data.sources import TensorSpec, prepare_data
from edgegate.discover import spec_for
from edgegate.config.policy_schema import DeviceProfile
from edgegate.errors import InputError
from edgegate.gate.matrix import parse_pair
from edgegate.policy.check import check_result, exit_code_for, model_status, verdict_of
from edgegate.progress import Progress
from edgegate.report.model import DeviceResult, Metrics, ModelReport, Report, finite
from edgegate.stages.measurement import ENERGY_KEYS
from edgegate.targets.base import host_machine

DEVICE_FIELDS = ("latency_p50_ms_before", "latency_p50_ms_after", "latency_p90_ms_before",
                 "latency_p90_ms_after", "latency_p50_ci95_ms_before", "latency_p50_ci95_ms_after",
                 "latency_runs", "speedup", "speedup_ci95", "accuracy_after", "accuracy_drop_pp",
                 "accuracy_drop_ci95_pp", "discordant_samples", "top1_agreement", "box_f1",
                 "cosine_similarity", "sqnr_db", "latency_p99_ms", "latency_p99_ci95_ms",
                 "latency_p99_ms_fp32", "throughput_ips", "throughput_ci95_ips", "throughput_ips_fp32",
                 "peak_memory_mb", "peak_memory_mb_fp32", "memory_growth_pct", "load_time_ms",
                 "load_time_ms_fp32", "energy_mj_per_inference", "power_mw_mean")


def _limits_from_checks(result: DeviceResult) -> dict[str, Limit]:
    """The limits the gate job applied (after policy integrity), recovered from its checks."""
    out = {}
    for c in result.checks:
        file, _, line = c.source.rpartition(":")
        if not line.isdigit():
            file, line = c.source, ""
        out[c.limit] = Limit(c.limit, c.threshold, file, int(line) if line else None)
    return out


def _energy(runner, feed: dict, power: str | None, metrics: dict, progress: Progress) -> dict:
    """Energy per inference from this machine's power source into ``metrics``; without one, the
    metrics stay null with the reason (no host number is ever kept for energy)."""
    from edgegate.stages.power import NoPowerSource, energy_per_inference, open_source

    try:
        source = open_source(power)
        progress.step(f"energy per inference from {source.name} on this device")
        got = energy_per_inference(source, lambda: runner.infer(feed))
    except NoPowerSource as exc:
        why = f"not measured: no power source ({exc})"
        for key in ENERGY_KEYS:
            metrics[key] = None
            metrics["not_measured"][key] = why
        return {"error": why}
    for key in ENERGY_KEYS:
        metrics[key] = got[key]
        metrics["not_measured"].pop(key, None)
    return got["record"]


def _task_of(model: ModelReport, spec, names: list[str]):
    """The task the gate job inferred (report.json), with the configured detection layout."""
    from edgegate.gate.model import detection_layout
    from edgegate.stages.fidelity import TaskInfo

    task = model.info.get("task") or {}
    return TaskInfo(task=task.get("task") or "regression", inferred=bool(task.get("inferred", True)),
                    why=task.get("why") or "not recorded by the gate job",
                    layout=detection_layout(spec.detection, names, model.path))


def measure_report(report: Report, report_dir: Path, loaded: LoadedConfig, out_dir: Path,
                   progress: Progress, pairs: list[str] | None = None,
                   policy: str | None = None, runner_label: str | None = None,
                   power: str | None = None) -> Report:
    wanted = {parse_pair(p) for p in pairs} if pairs else None
    devices = resolve_devices(policy_stack(loaded, policy))
    out_dir.mkdir(parents=True, exist_ok=True)
    from edgegate.stages.memory import Footprints

    footprints = Footprints()        # each model file's fresh-process measurement once per run
    models = []
    for model in report.models:
        results = []
        for r in model.results:
            if wanted is not None and (model.path, r.device) not in wanted:
                continue
            if r.status not in ("passed", "failed") or r.artifact is None:
                continue
            with progress.group(f"measure {model.path} → {r.device} on this machine"):
                results.append(_measure_one(model, r, report_dir, loaded, out_dir, devices, progress,
                                            runner_label, footprints, power))
        if results:
            m = model.model_copy(update={"results": results})
            models.append(m.model_copy(update={"status": model_status(m)}))
    if not models:
        raise InputError("no measurable result in the report matches", file=str(report_dir),
                         fix="pass the partial report of a passed/failed model x device "
                             "(and --only MODEL@DEVICE matching it)")
    only = [f"{m.path}@{r.device}" for m in models for r in m.results]
    return report.model_copy(update={
        "models": models, "only": only, "carried": [],
        "verdict": verdict_of(models, report.errors, report.policy_changes),
        "exit_code": exit_code_for(models, report.errors, report.policy_changes)})


def _measure_one(model: ModelReport, r: DeviceResult, report_dir: Path, loaded: LoadedConfig,
                 out_dir: Path, devices: dict, progress: Progress, runner_label: str | None,
                 footprints=None, power: str | None = None) -> DeviceResult:
    from edgegate.gate.model import confirm_failing_load, confirm_failing_speed
    from edgegate.stages.measurement import (FIDELITY_KEYS, FP32_MEMORY_KEYS, FP32_TIMING_KEYS,
                                             Scoring, measure_artifact, time_artifacts, timing_gaps)
    from edgegate.stages.memory import Loadable
    from edgegate.targets import load_target

    src = report_dir / r.artifact.path
    if not src.exists():
        raise InputError("the artifact is not beside the report", file=str(src),
                         fix="download the gate job's whole output folder (report.json and artifacts/)")
    dest = out_dir / r.artifact.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dest.resolve():
        shutil.copytree(src, dest, dirs_exist_ok=True) if src.is_dir() else shutil.copy2(src, dest)
        sidecar = src.with_name(src.name + ".data")
        if sidecar.is_file():
            shutil.copy2(sidecar, dest.with_name(dest.name + ".data"))
    spec = spec_for(loaded.config, model.path)
    if spec is None:
        raise InputError(f"{model.path} is not configured in edgegate.yml here", file=model.path,
                         fix="run measure in a checkout of the same commit")
    dev = devices.get(r.device)
    threads = (dev.profile.threads if dev else None) or loaded.config.benchmark.threads
    inputs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in model.info.get("inputs", [])]
    data = prepare_data(spec, inputs, loaded.root)
    target = load_target(r.target)
    runner = target.runner(dest, threads, model.path, r.artifact.input_binding)
    baseline = None
    source = loaded.root / model.path
    if r.target == "onnxruntime" and model.framework == "onnx" and source.is_file():
        baseline = target.runner(source, threads, model.path)
    bench = loaded.config.benchmark
    names = [o["name"] for o in model.info.get("outputs", [])]
    scoring = Scoring(task=_task_of(model, spec, names), ref_outputs=None, output_names=names,
                      metric=r.metrics.metric, which=spec.evaluation.output if spec.evaluation else 0,
                      accuracy_before=r.metrics.accuracy_before, root=loaded.root)
    limits = dict(timeout_s=dev.profile.timeout_s if dev else None,
                  memory_limit_mb=dev.profile.memory_limit_mb if dev else None)
    loads = (Loadable(r.target, dest, threads, model.path, r.artifact.input_binding, **limits),
             Loadable(r.target, source, threads, model.path, None, **limits)
             if baseline is not None else None)
    measured = measure_artifact(runner, baseline, data.evaluation, bench, scoring, model.path,
                                lambda text: progress.step(f"{text} on this device"), loads=loads,
                                footprints=footprints)
    m = r.metrics.model_dump()
    m.update(measured.metrics)
    kept = [] if baseline is not None else [*FP32_TIMING_KEYS, *FP32_MEMORY_KEYS, *FIDELITY_KEYS]
    gaps = {k: why for k, why in measured.not_measured.items() if k not in kept}
    m.setdefault("not_measured", {}).update(gaps)
    for k in gaps:                  # not measured on the device: no host number in its place
        if k in m and k != "not_measured":
            m[k] = None
    energy = _energy(runner, data.evaluation.feed(0), power, m, progress)
    profile = dev.profile if dev else DeviceProfile(target=r.target)
    resolved = ResolvedDevice(r.device, r.target, profile, _limits_from_checks(r))
    confirmation = None
    if measured.pair is not None:
        def retime():
            fresh = target.runner(dest, threads, model.path, r.artifact.input_binding)
            fresh_base = target.runner(source, threads, model.path)
            return time_artifacts(fresh_base, fresh, data.evaluation.feed(0), bench, seed=1)

        confirmation = confirm_failing_speed(m, resolved, measured.pair, retime, progress,
                                             f"{model.path}@{r.device}")
        if confirmation:
            timing_gaps(m, m["not_measured"])
    measurement = {**runner.measurement, "where": "device", "device": r.device,
                   "machine": host_machine(), "runner_label": runner_label,
                   "measured_on_device": [k for k in DEVICE_FIELDS if k not in kept and not (
                       k in ENERGY_KEYS and m.get(k) is None)],
                   "kept_from_host": kept, "host_measurement": r.measurement}
    if confirmation:
        measurement["speed_confirmation"] = confirmation
    measurement["energy"] = energy
    if measured.memory:
        confirm_failing_load(m, resolved, loads[0], data.evaluation.feed(0), measured.memory, progress,
                             f"{model.path}@{r.device}")
        measurement["memory"] = measured.memory
    result = r.model_copy(update={"metrics": Metrics(**m), "measurement": measurement,
                                  "status": "passed", "checks": [], "violations": []})
    return check_result(result, resolved)
