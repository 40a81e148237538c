"""The base commit's result for a changed model, and the regression delta head - base.

The base version of the model is gated exactly as a run on the base commit would gate it: its
edgegate.yml, its policy file, its data and its model file are read from the base commit (``git
archive``), looked up in the results cache (a run on the default branch fills it), and, with
``baseline: auto``, compressed and measured when not cached (then cached). The delta is shown
beside the result in the comment; latency from two runs is compared only through intervals.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

from edgegate.config.load import (LoadedConfig, _validate, builtin_profiles, load_policy,
                                  ResolvedDevice, resolve_devices)
from edgegate.config.schema import Config
from edgegate.config.yamlfile import load_yaml
from edgegate.discover import Git, ModelJob, spec_for
from edgegate.errors import EdgeGateError, InputError
from edgegate.gate.model import RunContext, devices_for
from edgegate.report.model import BaselineResult, DeviceResult, ModelReport
from edgegate.gate.cached import CacheUse, gate_cached

COMPARED = ("size_bytes_after", "size_ratio", "accuracy_after", "accuracy_drop_pp", "top1_agreement",
            "latency_p50_ms_after", "speedup", "peak_memory_mb")     # peak memory: shown, not gated


def extract(git: Git, commit: str, paths: list[str], dest: Path) -> None:
    """Write ``paths`` (files or folders, relative to the git client's folder) at ``commit`` into
    ``dest``; paths that do not exist there are skipped."""
    wanted = [p for p in dict.fromkeys(paths) if p and
              git.run("cat-file", "-t", f"{commit}:./{p}", check=False).strip() in ("blob", "tree")]
    if not wanted:
        return
    proc = subprocess.run(["git", "archive", "--format=tar", commit, "--", *wanted], cwd=git.root,
                          capture_output=True, timeout=600)
    if proc.returncode != 0:
        raise InputError(f"git archive failed: {proc.stderr.decode(errors='replace').strip()[:300]}",
                         file=str(git.root), fix="fetch the base commit (fetch-depth: 0)")
    prefix = git.run("rev-parse", "--show-prefix").strip()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        for member in tar.getmembers():
            if prefix and member.name.startswith(prefix):
                member.name = member.name[len(prefix):]
        _safe_extract(tar, dest)


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Regular files and folders only, never outside ``dest`` (tarfile's "data" filter exists only
    from Python 3.11.4 / 3.10.12; Debian bookworm's Python 3.11.2 lacks it)."""
    root = dest.resolve()
    members = []
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or (target != root and root not in target.parents):
            continue
        members.append(member)
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
    else:
        tar.extractall(dest, members=members)


def base_results(job: ModelJob, model: ModelReport, base: str, git: Git, loaded: LoadedConfig,
                 ctx: RunContext, use: CacheUse, mode: str, override: str | None = None
                 ) -> ModelReport:
    """``model`` with each result's ``baseline`` filled from the base commit (where there is one)."""
    if mode == "off" or job.change not in ("modified", "renamed") or model.error is not None:
        return model
    base_path = job.old_path or job.path
    config_file = loaded.source.file
    with tempfile.TemporaryDirectory(prefix="edgegate-base-") as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        try:
            extract(git, base, [config_file], root)
            if not (root / config_file).is_file():
                return model
            doc = load_yaml(root / config_file, display=f"{config_file}@{base[:7]}")
            base_config = _validate(Config, doc)
            spec = spec_for(base_config, base_path)
            if spec is None:
                return model
            cal = spec.calibration_spec()
            extract(git, base, [base_path, base_config.policy or "",
                                cal.data if cal and cal.data else "",
                                spec.evaluation.data if spec.evaluation and spec.evaluation.data else ""],
                    root)
            stack = builtin_profiles()
            if base_config.policy and (root / base_config.policy).is_file():
                stack.append(load_policy(root / base_config.policy, display=base_config.policy))
            if override:
                stack.append(load_policy(override, display=str(override)))
            devices = resolve_devices(stack)
            wanted = [r.device for r in model.results if r.status in ("passed", "failed")
                      and r.device in devices and r.device in devices_for(
                          ModelJob(base_path, spec, "base"), base_config)]
            if not wanted:
                return model
            base_job = ModelJob(base_path, spec.model_copy(update={"devices": wanted}), "base")
            base_ctx = dataclasses.replace(ctx, config=base_config, root=root, devices=devices,
                                           out_dir=Path(tmp) / "out", keep_workdir=False)
            compute = mode == "auto"
            ctx.progress.step(f"baseline: {base_path} at {base[:7]} "
                              f"({'cache, else computed' if compute else 'cache only'})")
            base_use = dataclasses.replace(use, commit=base)
            base_model = gate_cached(base_job, base_ctx, base_use, compute=compute)
            if base_model is None:
                return model
            by_device = {r.device: r for r in base_model.results}
            results = []
            for r in model.results:
                b = by_device.get(r.device)
                if b is None:
                    results.append(r)
                    continue
                timing = _time_against_base(model, r, b, job, ctx, base_ctx.out_dir)
                if timing is not None:
                    timing.update(_memory_against_base(model, r, b, job, ctx, base_ctx.out_dir))
                results.append(r.model_copy(update={
                    "baseline": compare(r, b, base, base_path, base_model.sha256, timing,
                                        ctx.devices.get(r.device))}))
            return model.model_copy(update={"results": results})
        except EdgeGateError as exc:
            ctx.progress.warn(f"baseline for {job.path} at {base[:7]}: {exc.message}")
            return model


def _time_against_base(model: ModelReport, head: DeviceResult, base: DeviceResult, job: ModelJob,
                       ctx: RunContext, base_out: Path) -> dict | None:
    """Base and head artifacts timed interleaved in this run: latency compared without the
    run-to-run noise of two separate measurements. None where they cannot run here."""
    if head.artifact is None or base.artifact is None or head.metrics.latency_p50_ms_after is None:
        return None
    from edgegate.data.sources import TensorSpec, prepare_data
    from edgegate.stages.measurement import time_artifacts
    from edgegate.targets import load_target

    try:
        target = load_target(head.target)
        threads = ctx.devices[head.device].profile.threads or ctx.config.benchmark.threads
        inputs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in model.info.get("inputs", [])]
        feed = prepare_data(job.spec, inputs, ctx.root).evaluation.feed(0)
        head_runner = target.runner(ctx.out_dir / head.artifact.path, threads, job.path,
                                    head.artifact.input_binding)
        base_runner = target.runner(base_out / base.artifact.path, threads, job.path,
                                    base.artifact.input_binding)
        ctx.progress.step(f"{model.name} → {head.device}: timing base vs head artifacts interleaved")
        pair = time_artifacts(base_runner, head_runner, feed, ctx.config.benchmark)
    except Exception as exc:      # the comparison is extra information: never fail the model on it
        ctx.progress.warn(f"{model.name} → {head.device}: base vs head timing failed: {exc}")
        return None
    return {"latency_p50_ms_base": pair.before.p50_ms, "latency_p50_ms_head": pair.after.p50_ms,
            "speedup_vs_base": pair.speedup, "speedup_vs_base_ci95": list(pair.speedup_ci95)}


def _memory_against_base(model: ModelReport, head: DeviceResult, base: DeviceResult, job: ModelJob,
                         ctx: RunContext, base_out: Path) -> dict:
    """Peak memory of the base and head artifacts, each in a fresh process on this machine in this
    run (the run's Footprints: the head's, and the base's when the base was gated here, are the
    measurements already taken). {} where either cannot be measured here."""
    if head.metrics.peak_memory_mb is None:
        return {}
    from edgegate.data.sources import TensorSpec, prepare_data
    from edgegate.stages.memory import Loadable

    try:
        device = ctx.devices[head.device]
        threads = device.profile.threads or ctx.config.benchmark.threads
        limits = dict(timeout_s=device.profile.timeout_s, memory_limit_mb=device.profile.memory_limit_mb)
        inputs = [TensorSpec(i["name"], tuple(i["shape"]), i["dtype"]) for i in model.info.get("inputs", [])]
        feed = prepare_data(job.spec, inputs, ctx.root).evaluation.feed(0)
        ctx.progress.step(f"{model.name} → {head.device}: peak memory of base and head artifacts")
        got = {role: ctx.footprints.footprint(Loadable(
                   head.target, out / r.artifact.path, threads, job.path, r.artifact.input_binding,
                   **limits), feed)["peak_memory_mb"]
               for role, r, out in (("head", head, ctx.out_dir), ("base", base, base_out))}
    except Exception as exc:      # extra information: never fail the model on it
        ctx.progress.warn(f"{model.name} → {head.device}: base vs head peak memory failed: {exc}")
        return {}
    return {"peak_memory_mb_base": got["base"], "peak_memory_mb_head": got["head"]}


SIZE_TOLERANCE = 0.01       # an artifact more than 1% larger than the base's: regressed (bytes
                            # of quantization parameters move with every retraining)
SLOWER_THAN_BASE = 0.95     # head/base speed ratio whose whole 95% interval lies below this: regressed


def compare(head: DeviceResult, base: DeviceResult, commit: str, path: str,
            sha256: str | None, timing: dict | None = None,
            device: ResolvedDevice | None = None) -> BaselineResult:
    hm, bm = head.metrics, base.metrics
    metrics = {k: getattr(bm, k) for k in COMPARED}
    delta = {}
    for k in COMPARED:
        h, b = getattr(hm, k), getattr(bm, k)
        delta[k] = (h - b) if (h is not None and b is not None) else None
    regressions = []
    if bm.size_bytes_after and (delta["size_bytes_after"] or 0) > SIZE_TOLERANCE * bm.size_bytes_after:
        regressions.append("size_bytes_after")
    if delta["accuracy_after"] is not None and delta["accuracy_after"] < 0 and hm.metric in ("top1", "top5"):
        regressions.append("accuracy_after")
    # Latency numbers of two separate runs differ by run-to-run noise: they are shown, never gated.
    # The latency comparison is the two artifacts timed interleaved in this run.
    notes = []
    if timing:
        metrics["latency_p50_ms_interleaved"] = timing["latency_p50_ms_base"]
        delta["latency_p50_ms_interleaved"] = timing["latency_p50_ms_head"] - timing["latency_p50_ms_base"]
        delta["speedup_vs_base"] = timing["speedup_vs_base"]
        delta["speedup_vs_base_ci95_low"], delta["speedup_vs_base_ci95_high"] = timing["speedup_vs_base_ci95"]
        if timing["speedup_vs_base_ci95"][1] < SLOWER_THAN_BASE:
            regressions.append("latency")
    else:
        notes.append("latency not compared: the artifacts cannot both run here")
    # Peak memory vs base: both artifacts measured in this run on this machine (fresh processes).
    if timing and timing.get("peak_memory_mb_base"):
        metrics["peak_memory_mb_same_run"] = timing["peak_memory_mb_base"]
        delta["peak_memory_mb_same_run"] = timing["peak_memory_mb_head"] - timing["peak_memory_mb_base"]
        growth = (timing["peak_memory_mb_head"] / timing["peak_memory_mb_base"] - 1.0) * 100.0
        delta["memory_growth_pct_vs_base"] = growth
        limit = device.limits.get("max_memory_growth_pct") if device is not None else None
        if limit is not None and growth > limit.value:
            regressions.append("peak_memory_mb")
    elif hm.peak_memory_mb is not None:
        notes.append("peak memory vs base not measured in this run: the artifacts cannot both "
                     "load here")
    source = "cache" if base.cache and base.cache.hit else "computed"
    if base.cache and base.cache.hit and base.cache.commit:
        notes.append(f"base result measured by the run on {base.cache.commit[:12]}")
    note = "; ".join(notes) or None
    return BaselineResult(commit=commit, path=path, sha256=sha256, source=source, status=base.status,
                          precision=base.artifact.precision if base.artifact else None,
                          metrics=metrics, delta=delta, regressions=regressions, note=note)
