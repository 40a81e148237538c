"""One model × its devices -> ModelReport. One model's failure never stops the run."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import onnx

from edgegate.config.load import ResolvedDevice
from edgegate.config.schema import Config, QuantizationSpec
from edgegate.data.sources import ModelData, prepare_data
from edgegate.discover import ModelJob
from edgegate.discover.detect import check_not_lfs_pointer, detect_framework
from edgegate.trust.paths import safe_path
from edgegate.errors import ConfigError, EdgeGateError, InputError, describe
from edgegate.frontends import SourceModel, load_frontend
from edgegate.frontends.export_check import check_on_data
from edgegate.frontends.onnx import check_weights
from edgegate.trust.isolation import probe_model
from edgegate.progress import Progress
from edgegate.trust.repo_code import check_spec_references, contained, exited_error
from edgegate.report.model import Artifact, DeviceResult, ErrorInfo, Metrics, ModelReport, finite
from edgegate.policy.check import check_result, model_status
from edgegate.stages.analyze import ModelInfo, analyze
from edgegate.stages.benchmark import PairTiming, pooled
from edgegate.stages.evaluate import collect_outputs, pick_output, score, stacked
from edgegate.stages.fidelity import DetectionLayout, TaskInfo, infer_task
from edgegate.stages.measurement import (FIDELITY_KEYS, FP32_MEMORY_KEYS, FP32_TIMING_KEYS,
                                         MEMORY_KEYS, TIMING_KEYS, Scoring, measure_artifact,
                                         time_artifacts, timing_gaps)
from edgegate.stages.memory import Footprints, Loadable
from edgegate.stages.optimize import optimize
from edgegate.targets import availability, load_target
from edgegate.targets.base import CompileJob
from edgegate.targets.onnxruntime import OrtRunner


@dataclass
class RunContext:
    config: Config
    root: Path
    out_dir: Path
    devices: dict[str, ResolvedDevice]
    progress: Progress
    keep_workdir: bool = False
    work_bytes_peak: int = 0     # the largest one model's work folder grew to (disk usage)
    # fresh-process memory measurements, each taken once in this run (shared with the base's run)
    footprints: Footprints = field(default_factory=Footprints)


@dataclass(frozen=True)
class PreparedModel:
    """One model ready to gate on its devices: loaded, analysed, optimized, its data prepared and
    its reference outputs (and labelled accuracy) taken once for every device."""

    job: ModelJob
    name: str
    display: str
    source: SourceModel
    info: ModelInfo
    optimized: Path
    data: ModelData
    ref_outputs: list
    accuracy_before: float | None
    task: TaskInfo

    def scoring(self, root: Path) -> Scoring:
        spec = self.job.spec
        return Scoring(task=self.task, ref_outputs=self.ref_outputs,
                       output_names=[o.name for o in self.info.outputs],
                       metric=self.data.evaluation.info.get("metric"),
                       which=spec.evaluation.output if spec.evaluation else 0,
                       accuracy_before=self.accuracy_before, root=root)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_of(path: Path) -> int:
    if path.is_file():
        size = path.stat().st_size
        data = path.with_name(path.name + ".data")
        return size + (data.stat().st_size if data.is_file() else 0)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def slug(text: str) -> str:
    """Deterministic ASCII names for files and release assets."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:80] or "model"


def model_name(job: ModelJob) -> str:
    if job.spec.name:
        return job.spec.name
    p = Path(job.path)
    return p.name if p.suffix == "" else p.stem


def unique_names(jobs: list[ModelJob]) -> list[ModelJob]:
    """Jobs whose names (and so artifact and release asset names) would collide, e.g.
    ``a/good.onnx`` and ``b/good.onnx``, are named after their repository path instead
    (``a-good``, ``b-good``): deterministic, and no artifact overwrites another."""
    counts: dict[str, int] = {}
    for job in jobs:
        counts[slug(model_name(job))] = counts.get(slug(model_name(job)), 0) + 1
    out, taken = [], set()
    for job in jobs:
        name = slug(model_name(job))
        if counts[name] > 1:
            stem = Path(job.path)
            name = slug(stem.with_suffix("").as_posix() if stem.suffix else stem.as_posix())
            base, n = name, 2
            while name in taken:                       # paths that slug alike: numbered
                name, n = f"{base}-{n}", n + 1
            job = dataclasses.replace(job, spec=job.spec.model_copy(update={"name": name}))
        taken.add(name)
        out.append(job)
    return out


def _error(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(**describe(exc))


def devices_for(job: ModelJob, config: Config) -> list[str]:
    return list(job.spec.devices or config.devices)


def gate_model(job: ModelJob, ctx: RunContext) -> ModelReport:
    from edgegate.trust.isolation import gate_device_isolated   # runs gate_device in a child process

    name = model_name(job)
    display = job.path
    base = dict(path=job.path, name=name, change=job.change, old_path=job.old_path, why=list(job.why))
    progress = ctx.progress
    workdir = (ctx.out_dir / ".work" / slug(name)).resolve()   # absolute: children have their own cwd
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        try:
            path = guarded_model_path(job, ctx.root)
            check_not_lfs_pointer(path, display)
            if not path.exists():
                raise InputError("model file not found", file=display,
                                 fix="commit the file or fix 'path' in edgegate.yml")
            check_spec_references(job.spec, ctx.root, display)   # before any of it is imported
            framework = detect_framework(path, display, job.spec.framework)
            base.update(sha256=sha256_of(path), size_bytes=size_of(path), framework=framework)
            progress.step(f"{name}: loading ({framework})")
            devices = [ctx.devices[d] for d in devices_for(job, ctx.config) if d in ctx.devices]
            source, measured = load_source(framework, path, display, job.spec, workdir, ctx, devices)
            base.update(framework_version=source.framework_version, export=source.export)
            model = onnx.load(str(source.onnx_path))
            check_weights(model, display)                  # NaN / Inf weights: nothing to quantize
            probe_model(source.onnx_path, display, devices, workdir,   # hangs / memory blow-ups:
                        ctx.root)                                      # in a child
            info = analyze(model)
            del model
            progress.step(f"{name}: {info.params:,} parameters, {info.total_macs:,} MACs; preparing data")
            data = prepare_data(job.spec, info.inputs, ctx.root)
            progress.step(f"{name}: optimizing the graph")
            optimized, opt_notes = optimize(source.onnx_path, workdir / "optimized.onnx", display)
            progress.step(f"{name}: reference outputs on {len(data.evaluation)} samples")
            if measured is not None:        # a framework model: measured in the child that loaded it
                ref_outputs, export_check, accuracy_before = measured
            else:
                ref_outputs, export_check, accuracy_before = reference_measurements(
                    source, data, job.spec, display, ctx.root, ctx.config.benchmark.threads)
            out_names = [o.name for o in info.outputs]
            task = infer_task(job.spec.task, [(t.name, t.shape, t.dtype) for t in info.inputs],
                              [(t.name, t.shape, t.dtype) for t in info.outputs], ref_outputs,
                              detection_layout(job.spec.detection, out_names, display))
            progress.step(f"{name}: task {task.task} ({task.why})")
        except EdgeGateError as exc:
            if not exc.file:             # e.g. a bad count in this model's entry: name the model
                exc.file = display
            progress.warn(f"{name}: {exc.full}")
            return ModelReport(**base, status="error", error=_error(exc))
        except Exception as exc:  # a bug or a toolchain crash: contained to this model
            progress.warn(f"{name}: internal error: {exc}")
            return ModelReport(**base, status="error", error=_error(exc))
        except BaseException as exc:  # sys.exit() & co. from the repository's code: this model's error
            if not contained(exc):
                raise                 # a real Ctrl-C stops the run
            err = exited_error(exc, display)
            progress.warn(f"{name}: {err.full}")
            return ModelReport(**base, status="error", error=_error(err))

        info_dict = info.to_dict()
        info_dict["optimization_notes"] = opt_notes
        if source.details or export_check:
            info_dict["export_check"] = {**source.details, "check_data": export_check}
        data_dict = {"calibration": _clean(data.calibration.info),
                     "evaluation": _clean(data.evaluation.info)}
        info_dict["task"] = {"task": task.task, "inferred": task.inferred, "why": task.why}
        prepared = PreparedModel(job, name, display, source, info, optimized, data, ref_outputs,
                                 accuracy_before, task)
        results = []
        for device_id in devices_for(job, ctx.config):
            device = ctx.devices[device_id]
            with progress.group(f"{name} → {device_id} ({device.target})"):
                results.append(gate_device_isolated(prepared, device, ctx, workdir))
        report = ModelReport(**base, info=info_dict, data=data_dict, warnings=data.warnings,
                             results=results)
        return report.model_copy(update={"status": model_status(report)})
    finally:
        ctx.work_bytes_peak = max(ctx.work_bytes_peak, tree_bytes(workdir))
        if not ctx.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------- loading, in a child
# Loading a framework model runs code from the pull request (TorchScript, a .pt2 program, a
# factory, Keras layers, tf.function tracing), and so do its reference outputs and a custom
# metric. All of it happens in one child process (isolation.run_in_child: no secrets, no
# network, no writes outside the work folder where the OS allows); the parent gets back the
# ONNX file, plain data and numbers. A committed ONNX model runs no Python code: it loads here.


def load_source(framework: str, path: Path, display: str, spec, workdir: Path, ctx: RunContext,
                devices: list) -> tuple[SourceModel, tuple | None]:
    """The SourceModel (ONNX path and details, no live reference) and, for a framework model,
    (reference outputs, export check, accuracy before) measured in the child."""
    from edgegate.trust.isolation import (DEFAULT_TIMEOUT_S, Sandbox, default_memory_limit_mb,
                                    isolation_enabled, run_in_child)

    if (framework == "onnx" and not _custom_metric(spec)) or not isolation_enabled():
        # a committed ONNX model runs no Python code; EDGEGATE_NO_ISOLATION=1 (debugging) runs
        # everything here, the live reference included
        return load_frontend(framework).load(path, display, spec, workdir, ctx.root), None
    want_pt2 = any(d.target == "coreml" for d in devices)
    # loading and exporting is not limited by a device's budget (it ran unbounded before);
    # the cap keeps a runaway load from taking the machine down with the run
    source, measured = run_in_child(
        "edgegate.gate.model:_prepare_source",
        (framework, Path(path).resolve(), display, spec, workdir.resolve(), Path(ctx.root).resolve(),
         ctx.config.benchmark.threads, want_pt2),            # absolute: the child has its own cwd
        timeout_s=DEFAULT_TIMEOUT_S, memory_limit_mb=default_memory_limit_mb(),
        what=f"loading {display} ({framework})", workdir=workdir,
        sandbox=Sandbox(repo=Path(ctx.root).resolve(), writable=(workdir.resolve(),)))
    if not isinstance(source, SourceModel) or Path(source.onnx_path).resolve().parent != workdir.resolve():
        raise InputError("the child that loaded the model returned something other than an ONNX "
                         "file in its work folder", file=display,
                         fix="treat this model as hostile; it must not replace EdgeGate's results")
    return source, measured


def _custom_metric(spec) -> bool:
    from edgegate.config.schema import METRICS

    metric = spec.evaluation.metric if spec.evaluation is not None else None
    return bool(metric) and metric not in METRICS


def _prepare_source(framework, path, display, spec, workdir, root, threads, want_pt2):
    """In the child: load the model, export it, and take what needs the source framework or the
    repository's code: the reference outputs, the export check and the accuracy before."""
    source = load_frontend(framework).load(path, display, spec, workdir, root)
    model = onnx.load(str(source.onnx_path))
    check_weights(model, display)
    info = analyze(model)
    del model
    data = prepare_data(spec, info.inputs, root)
    measured = reference_measurements(source, data, spec, display, root, threads,
                                      [o.name for o in info.outputs])
    holder = None
    module = getattr(source.reference, "module", None)
    if want_pt2 and module is not None:           # the Core ML target converts from the source
        holder = _export_program(module, data, workdir)
    plain = dataclasses.replace(source, reference=holder, details=_plain(source.details),
                                framework_version=_plain(source.framework_version),
                                export=_plain(source.export))
    return plain, measured


def reference_measurements(source: SourceModel, data: ModelData, spec, display: str, root: Path,
                           threads: int | None, out_names: list[str] | None = None):
    """Reference outputs on the evaluation data (the source framework, else ONNX Runtime), the
    export check against them and the labelled accuracy before optimization."""
    reference = source.reference or OrtRunner(source.onnx_path, threads, display)
    ref_outputs = collect_outputs(reference.infer, data.evaluation, display)
    export_check = None
    if source.reference is not None:   # a framework model: its ONNX export vs the source
        export_check = check_on_data(source.onnx_path, ref_outputs, data.evaluation, display,
                                     threads, spec.export_max_abs_diff)
    if out_names is None:
        out_names = [o.name for o in onnx.load(str(source.onnx_path), load_external_data=False).graph.output]
    metric = data.evaluation.info.get("metric", "fidelity")
    accuracy_before = None
    if data.evaluation.labels is not None and metric != "fidelity":
        which = spec.evaluation.output if spec.evaluation else 0
        accuracy_before = score(metric, stacked(pick_output(ref_outputs, which, out_names, display)),
                                data.evaluation.labels, root)
    return ref_outputs, export_check, accuracy_before


def _export_program(module, data: ModelData, workdir: Path):
    """The source module as a torch.export file the Core ML child loads back (None if it does
    not export: Core ML then converts from ONNX)."""
    import torch

    from edgegate.trust.isolation import ModuleHolder

    path = workdir / "source-module.pt2"
    try:
        example = tuple(torch.from_numpy(v) for v in data.calibration.feed(0).values())
        torch.export.save(torch.export.export(module, example), str(path))
        return ModuleHolder(path)
    except Exception:
        return None


def _plain(value):
    """Details as plain data (they cross back to the parent and go into report.json): str
    subclasses such as torch's version become str, numpy scalars Python numbers."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bool, int, float)):
        return float(value) if isinstance(value, float) else int(value)   # int / float subclasses (IntEnum ...)
    return str(value)

def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed; 0 if it is gone)."""
    total = 0
    for file in path.rglob("*") if path.is_dir() else ():
        try:
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
        except OSError:
            pass
    return total


def guarded_model_path(job: ModelJob, root: Path) -> Path:
    """The model file (or SavedModel folder, every entry checked) through the one path guard:
    inside the repository with links followed, a regular file or folder (a FIFO is refused
    without being opened). Paths typed on the command line are held to the same rule."""
    return safe_path(root, job.path, what="model path", field="path", display=job.path, tree=True)


def _clean(info: dict) -> dict:
    return {k: v for k, v in info.items() if not k.startswith("_")}


def gate_device(prepared: PreparedModel, device: ResolvedDevice, ctx: RunContext,
                workdir: Path) -> DeviceResult:
    if device.profile.candidates:    # several runtimes: each gated here, the best ships (gate/candidates.py)
        from edgegate.gate.candidates import gate_candidates
        return gate_candidates(gate_device, prepared, device, ctx, workdir)
    started = time.monotonic()
    avail = availability(device.target)
    if not avail.can_compile:
        reason = avail.reason + (f"; install with {avail.install_hint}" if avail.install_hint else "")
        return DeviceResult(device=device.id, target=device.target, status="skipped", reason=reason)
    label = f"{prepared.name} → {device.id}"
    try:
        return check_result(_compile_and_measure(prepared, device, ctx, workdir, started), device)
    except EdgeGateError as exc:
        ctx.progress.warn(f"{label}: {exc.full}")
        return DeviceResult(device=device.id, target=device.target, status="error",
                            reason=exc.message, error=_error(exc),
                            duration_s=round(time.monotonic() - started, 2))
    except Exception as exc:  # a toolchain crash stays in this row
        ctx.progress.warn(f"{label}: internal error: {type(exc).__name__}: {exc}")
        return DeviceResult(device=device.id, target=device.target, status="error",
                            reason=f"{type(exc).__name__}: {exc}"[:500], error=_error(exc),
                            duration_s=round(time.monotonic() - started, 2))
    except BaseException as exc:  # sys.exit() & co. from a custom metric: this row's error
        if not contained(exc):
            raise
        err = exited_error(exc, prepared.display)
        ctx.progress.warn(f"{label}: {err.full}")
        return DeviceResult(device=device.id, target=device.target, status="error",
                            reason=err.message[:500], error=_error(err),
                            duration_s=round(time.monotonic() - started, 2))


def _compile_and_measure(p: PreparedModel, device: ResolvedDevice, ctx: RunContext, workdir: Path,
                         started: float) -> DeviceResult:
    progress, label = ctx.progress, f"{p.name} → {device.id}"
    target = load_target(device.target)
    progress.step(f"{label}: compiling ({device.target})")
    dev_work = workdir / slug(device.id)
    dev_work.mkdir(parents=True, exist_ok=True)
    compiled = target.compile(CompileJob(
        model_path=p.optimized, source_path=p.source.onnx_path, info=p.info,
        calibration=p.data.calibration, evaluation=p.data.evaluation, device=device,
        quantization=_quantization(p.job, ctx.config, device), benchmark=ctx.config.benchmark,
        workdir=dev_work, display=p.display, name=slug(p.name), source=p.source, task=p.task))
    artifact = _publish_artifact(compiled.artifact, ctx.out_dir, p.name, device.id, compiled.precision)
    for extra in compiled.extra_files:     # e.g. build-engine.sh beside the artifact
        shutil.move(str(extra), artifact.with_name(f"{slug(p.name)}-{slug(device.id)}-{extra.name}"))
    art = Artifact(path=artifact.relative_to(ctx.out_dir).as_posix(), sha256=sha256_of(artifact),
                   size_bytes=size_of(artifact), precision=compiled.precision,
                   format=compiled.format, input_binding=compiled.input_binding)
    size_before = _source_size(p.job, ctx.root) or (
        size_of(p.source.onnx_path) if p.source.framework == "onnx" else None)
    metrics: dict = {"size_bytes_before": size_before, "size_bytes_after": art.size_bytes,
                     "size_ratio": (size_before / art.size_bytes) if size_before else None,
                     "size_mb_after": art.size_bytes / 1e6,
                     "metric": p.data.evaluation.info.get("metric"),
                     "accuracy_before": p.accuracy_before, "eval_samples": len(p.data.evaluation),
                     "task": p.task.task, "task_why": p.task.why,
                     "primary_metric": p.task.primary}
    not_measured: dict[str, str] = {}
    if compiled.measurable:
        threads = device.profile.threads or ctx.config.benchmark.threads

        def runners():
            return (target.runner(artifact, threads, p.display, art.input_binding),
                    target.runner(compiled.baseline, threads, p.display, art.input_binding))

        runner, baseline = runners()
        measurement = dict(runner.measurement)
        measurement["baseline"] = f"FP32 model on {measurement.get('runtime')} (same process, interleaved)"
        limits = dict(timeout_s=device.profile.timeout_s, memory_limit_mb=device.profile.memory_limit_mb)
        loads = (Loadable(device.target, artifact, threads, p.display, art.input_binding, **limits),
                 Loadable(device.target, compiled.baseline, threads, p.display, art.input_binding,
                          **limits))
        measured = measure_artifact(runner, baseline, p.data.evaluation, ctx.config.benchmark,
                                    p.scoring(ctx.root), p.display,
                                    lambda text: progress.step(f"{label}: {text}"), loads=loads,
                                    footprints=ctx.footprints)
        metrics.update(measured.metrics)
        not_measured.update(measured.not_measured)
        metrics["not_measured"] = not_measured
        if measured.memory:
            measurement["memory"] = measured.memory
            confirm_failing_load(metrics, device, loads[0], p.data.evaluation.feed(0), measured.memory,
                                 progress, label)
        if p.accuracy_before is None:
            not_measured["accuracy_before"] = "no labelled evaluation data"
        del runner, baseline

        def retime():
            fresh, fresh_base = runners()
            return time_artifacts(fresh_base, fresh, p.data.evaluation.feed(0), ctx.config.benchmark,
                                  seed=1)

        confirmation = confirm_failing_speed(metrics, device, measured.pair, retime, progress, label)
        if confirmation:
            measurement["speed_confirmation"] = confirmation
            timing_gaps(metrics, not_measured)
    else:
        why = compiled.not_measurable_reason or "this machine cannot run the artifact"
        for key in ("latency_p50_ms_after", "accuracy_after", "accuracy_drop_pp", *FIDELITY_KEYS,
                    *FP32_TIMING_KEYS, *TIMING_KEYS, *MEMORY_KEYS, *FP32_MEMORY_KEYS):
            not_measured[key] = why
        measurement = {"where": "not measured", "reason": why}
    metrics["not_measured"] = not_measured
    return DeviceResult(device=device.id, target=device.target, status="passed", artifact=art,
                        metrics=Metrics(**metrics), measurement=measurement,
                        quantization=compiled.quantization, notes=compiled.notes,
                        duration_s=round(time.monotonic() - started, 2))


def _source_size(job: ModelJob, root: Path) -> int | None:
    try:
        return size_of(guarded_model_path(job, root))
    except (EdgeGateError, OSError):
        return None


def detection_layout(spec, output_names: list[str], display: str) -> DetectionLayout | None:
    """edgegate.yml's ``detection:`` as the decoder's layout (output names resolved to indices)."""
    if spec is None:
        return None

    def index(ref, field_name: str) -> int | None:
        if ref is None or isinstance(ref, int):
            if isinstance(ref, int) and ref >= len(output_names):
                raise ConfigError(f"detection.{field_name} is {ref} but the model has "
                                  f"{len(output_names)} outputs", file=display,
                                  field=f"detection.{field_name}",
                                  fix=f"use 0..{len(output_names) - 1} or an output name")
            return ref
        if ref not in output_names:
            raise ConfigError(f"the model has no output named '{ref}'", file=display,
                              field=f"detection.{field_name}", fix="use one of " + ", ".join(output_names))
        return output_names.index(ref)

    layout = DetectionLayout(kind=spec.layout, output=index(spec.output, "output"),
                             scores_output=index(spec.scores_output, "scores_output"),
                             box_format=spec.box_format,
                             conf_threshold=spec.conf_threshold, iou_threshold=spec.iou_threshold,
                             match_iou=spec.match_iou)
    if spec.channels_first is not None:
        layout = dataclasses.replace(layout, channels_first=spec.channels_first)
    if spec.layout == "ssd" and layout.scores_output is None:
        raise ConfigError("an ssd layout needs the scores output", file=display,
                          field="detection.scores_output", fix="name the output holding the scores")
    return layout


def _quantization(job: ModelJob, config: Config, device: ResolvedDevice) -> QuantizationSpec:
    """Run-wide settings, then the device profile's, then the model's own (most specific wins)."""
    merged: dict = config.quantization.model_dump(exclude_unset=True)
    if device.profile.quantization:
        merged.update(device.profile.quantization.model_dump(exclude_unset=True))
    if job.spec.quantization:
        merged.update(job.spec.quantization.model_dump(exclude_unset=True))
    return QuantizationSpec(**merged)


def _publish_artifact(path: Path, out_dir: Path, name: str, device: str, precision: str) -> Path:
    dest_dir = out_dir / "artifacts"
    dest_dir.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-1:])          # also for folders: .mlpackage
    dest = dest_dir / f"{slug(name)}-{slug(device)}-{precision}{suffix}"
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    shutil.move(str(path), dest)
    data = path.with_name(path.name + ".data")
    if data.is_file():
        shutil.move(str(data), dest.with_name(dest.name + ".data"))
    return dest


def confirm_failing_speed(metrics: dict, device: ResolvedDevice | None, first: PairTiming,
                          retime: Callable[[], PairTiming], progress: Progress, label: str) -> dict | None:
    """A failing speed gate is confirmed before it is reported: ``retime()`` takes a second,
    independent interleaved measurement with fresh sessions (called after the evaluation, so at
    another moment of the machine's load), and ``metrics`` gets both pooled, so that one window of
    load on a shared machine cannot fail a pull request on its own. Returns the record of it."""
    if device is None or not _speed_gate_fails(metrics, device):
        return None
    progress.step(f"{label}: a speed limit fails; confirming with a second independent measurement")
    again = retime()
    metrics.update(pooled(first, again).metrics())
    return {"why": "a speed limit failed on the first measurement",
            "first": {"speedup": round(first.speedup, 4), "runs": first.after.runs,
                      "speedup_ci95": [round(v, 4) for v in first.speedup_ci95]},
            "second": {"speedup": round(again.speedup, 4), "runs": again.after.runs,
                       "speedup_ci95": [round(v, 4) for v in again.speedup_ci95]},
            "decided_on": "both measurements pooled"}


def _speed_gate_fails(metrics: dict, device: ResolvedDevice, which: tuple[str, ...] | None = None) -> bool:
    """Would a latency limit of this device fail on these timings (decided as check_result does)?"""
    result = DeviceResult(device=device.id, target=device.target, status="passed",
                          metrics=Metrics(**metrics))
    return any(c.metric in (which or SPEED_METRICS) for c in check_result(result, device).violations)


def confirm_failing_load(metrics: dict, device: ResolvedDevice | None, load: Loadable, feed: dict,
                         memory: dict | None, progress: Progress, label: str) -> None:
    """A failing ``max_load_time_ms`` is confirmed before it is reported: the artifact is loaded
    cold once more in another fresh process and the lower of the two loads counts (load on the
    machine only ever adds time). ``memory`` (the record of the measurement) gets both."""
    if device is None or memory is None or metrics.get("load_time_ms") is None \
            or not _speed_gate_fails(metrics, device, ("load_time_ms",)):
        return
    from edgegate.stages.memory import footprint

    progress.step(f"{label}: the load-time limit fails; loading cold once more in a fresh process")
    first = metrics["load_time_ms"]
    try:
        second = footprint(load, feed)["load_time_ms"]
    except EdgeGateError as exc:
        memory["load_confirmation"] = {"first_ms": first, "error": exc.message[:300]}
        return
    metrics["load_time_ms"] = min(first, second)
    memory["load_confirmation"] = {"why": "max_load_time_ms failed on the first cold load",
                                   "first_ms": round(first, 3), "second_ms": round(second, 3),
                                   "decided_on": "the lower of the two cold loads"}


# the limits decided on timings, which a second independent timing confirms before they fail
SPEED_METRICS = ("speedup", "latency_p50_ms_after", "latency_p99_ms", "throughput_ips")
