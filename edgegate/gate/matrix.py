"""Matrix fan-out: plan one job per model x device, gate each alone, merge the partial reports.

``edgegate plan`` prints ``{"include": [...]}`` for a GitHub Actions matrix; each job runs
``edgegate run --only MODEL@DEVICE`` and uploads its output folder; ``edgegate merge`` combines the
folders into one report.json, comment.md, summary.md and artifacts/, with the verdict recomputed.
A result measured on a device runner (``edgegate measure``) replaces the host's result for the
same model x device.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from edgegate.config.check import check_devices, check_paths, repository_files
from edgegate.config.load import LoadedConfig, policy_stack, resolve_devices
from edgegate.config.schema import Config
from edgegate.discover import Discovery, Git, ModelJob, discover
from edgegate.errors import ConfigError, InputError
from edgegate.gate.model import devices_for, model_name, slug
from edgegate.policy.check import exit_code_for, model_status, verdict_of
from edgegate.report.model import DeviceResult, ModelReport, Report


def parse_pair(pair: str) -> tuple[str, str]:
    model, sep, device = pair.rpartition("@")
    if not sep or not model or not device:
        raise ConfigError(f"--only '{pair}' is not MODEL@DEVICE", value=pair,
                          fix="use the 'only' value of an 'edgegate plan' entry, e.g. models/a.onnx@x86-cpu")
    return model, device


def select_only(discovery: Discovery, pairs: list[str], config: Config) -> tuple[Discovery, list[str]]:
    """The discovery restricted to the MODEL@DEVICE pairs (a partial report's scope)."""
    wanted: dict[str, list[str]] = {}
    for pair in pairs:
        model, device = parse_pair(pair)
        wanted.setdefault(model, []).append(device)
    jobs = []
    by_path = {j.path: j for j in discovery.jobs}
    for model, devices in wanted.items():
        job = by_path.get(model)
        if job is None:
            raise InputError(f"--only: '{model}' is not among the models this run gates",
                             value=model, fix="run 'edgegate plan' with the same --base/--head and use "
                                              "its entries; gated here: " +
                                              (", ".join(by_path) or "none"))
        allowed = devices_for(job, config)
        for d in devices:
            if d not in allowed:
                raise ConfigError(f"--only: '{model}' is not gated on '{d}'", value=d,
                                  fix="use one of " + ", ".join(allowed))
        ordered = [d for d in allowed if d in devices]
        jobs.append(replace(job, spec=job.spec.model_copy(update={"devices": ordered})))
    only = [f"{j.path}@{d}" for j in jobs for d in j.spec.devices]
    return Discovery(jobs=jobs, removed=discovery.removed, unchanged=discovery.unchanged,
                     base=discovery.base, head=discovery.head), only


def plan(loaded: LoadedConfig, git: Git | None, *, base: str | None = None, head: str | None = None,
         models: list[str] | None = None, devices: list[str] | None = None,
         policy: str | None = None) -> dict:
    """The job matrix: one entry per model x device, with the device's runner label if any."""
    config = loaded.config
    if devices:
        config = config.model_copy(update={"devices": list(devices)})
    if git is None and not models:
        git = Git(loaded.root)
    resolved = resolve_devices(policy_stack(loaded, policy))
    check_devices(loaded, resolved, devices)
    check_paths(loaded, lambda: repository_files(loaded.root, git))
    discovery = discover(loaded.config, loaded.root, git, base=base, head=head, explicit=models,
                         config_file=loaded.source.file if loaded.source.data is not None else None)
    include = []
    for job in discovery.jobs:
        if devices:
            job = replace(job, spec=job.spec.model_copy(update={"devices": list(devices)}))
        for d in devices_for(job, config):
            dev = resolved.get(d)
            include.append({"model": job.path, "device": d, "only": f"{job.path}@{d}",
                            "name": f"{slug(model_name(job))}-{slug(d)}",
                            "target": dev.target if dev else None,
                            "runner": dev.profile.runner if dev else None,
                            "measure_on_device": bool(dev and dev.profile.runner)})
    return {"include": include, "count": len(include), "base": discovery.base,
            "head": discovery.head, "unchanged": discovery.unchanged, "removed": discovery.removed}


def merge(reports: list[tuple[Report, Path]], out_dir: Path,
          device_order: dict[str, list[str]] | None = None) -> Report:
    """Partial reports (each with its output folder) -> one report; artifacts are copied."""
    if not reports:
        raise InputError("nothing to merge", fix="pass the folders (or report.json files) of the partial runs")
    first = reports[0][0]
    for rep, folder in reports[1:]:
        if rep.commits.get("head") != first.commits.get("head") or \
                rep.commits.get("base") != first.commits.get("base"):
            raise InputError(f"{folder} gated other commits ({rep.commits}) than {reports[0][1]} "
                             f"({first.commits})", file=str(folder),
                             fix="merge only the partial reports of one workflow run")
    models: dict[str, ModelReport] = {}
    results: dict[str, dict[str, DeviceResult]] = {}
    carried: dict[str, ModelReport] = {}
    errors, changes = [], []
    out_dir.mkdir(parents=True, exist_ok=True)
    for rep, folder in reports:
        for m in rep.models:
            models.setdefault(m.path, m)
            if m.error is not None and models[m.path].error is None:
                models[m.path] = m
            slot = results.setdefault(m.path, {})
            for r in m.results:
                if r.device not in slot or _on_device(r) and not _on_device(slot[r.device]):
                    slot[r.device] = r
        for m in rep.carried:
            carried.setdefault(m.path, m)
        errors += [e for e in rep.errors if e not in errors]
        changes += [c for c in rep.policy_changes if c not in changes]
        artifacts = folder / "artifacts"
        if artifacts.is_dir() and artifacts.resolve() != (out_dir / "artifacts").resolve():
            shutil.copytree(artifacts, out_dir / "artifacts", dirs_exist_ok=True)
    merged = []
    for path in sorted(models):
        m = models[path]
        order = (device_order or {}).get(path) or []
        devs = sorted(results[path], key=lambda d: (order.index(d) if d in order else len(order), d))
        full = m.model_copy(update={"results": [results[path][d] for d in devs]})
        merged.append(full.model_copy(update={"status": model_status(full)}))
    return first.model_copy(update={
        "models": merged, "errors": errors, "policy_changes": changes,
        "carried": [carried[p] for p in sorted(carried) if p not in models], "only": [],
        "verdict": verdict_of(merged, errors, changes),
        "exit_code": exit_code_for(merged, errors, changes)})


def _on_device(r: DeviceResult) -> bool:
    return r.measurement.get("where") == "device"


def device_order(config: Config, paths: list[str]) -> dict[str, list[str]]:
    """Each model's devices in the order a single run gates them."""
    from edgegate.discover import spec_for

    out = {}
    for p in paths:
        spec = spec_for(config, p)
        if spec is not None:
            out[p] = devices_for(ModelJob(p, spec, "explicit"), config)
    return out
