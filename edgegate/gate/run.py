"""The whole gate: discover -> pipeline per model -> policy -> report.json -> comment.md, summary.md."""

from __future__ import annotations

import datetime as _dt
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from edgegate import __version__
from edgegate.config.check import check_devices, check_paths, repository_files
from edgegate.config.load import LoadedConfig, ResolvedDevice, policy_stack, resolve_devices
from edgegate.discover import Discovery, Git, discover, spec_for
from edgegate.errors import ConfigError, EdgeGateError, describe
from edgegate.gate.base_commit import base_results
from edgegate.gate.cache import ResultCache, default_cache_dir
from edgegate.gate.model import RunContext, devices_for, tree_bytes, unique_names
from edgegate.stages.memory import Footprints
from edgegate.policy.check import exit_code_for, verdict_of
from edgegate.progress import Progress
from edgegate.report.model import DiskUsage, ErrorInfo, Report, write_report
from edgegate.report.render import write_rendered
from edgegate.gate.cached import CacheUse, carry_forward, gate_cached
from edgegate.targets.toolchain import machine, toolchain


@dataclass
class RunOptions:
    models: list[str]
    base: str | None = None
    head: str | None = None
    devices: list[str] | None = None
    policy: str | None = None
    keep_workdir: bool = False
    only: list[str] | None = None          # MODEL@DEVICE pairs: a partial report (edgegate merge)
    cache_dir: str | None = None
    no_cache: bool = False
    baseline: str | None = None            # auto | cache | off (default: edgegate.yml's)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def run_gate(loaded: LoadedConfig, opts: RunOptions, out_dir: Path, progress: Progress,
             git: Git | None = None, clock: Callable[[], str] = _now) -> Report:
    """Never raises for bad models or data: those become error rows. Configuration errors
    become a report with a run-level error (and no models gated)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = loaded.root
    config = loaded.config
    errors: list[ErrorInfo] = []
    models = []
    discovery = Discovery(jobs=[])
    policy_files: list[str] = []
    policy_changes: list = []
    carried: list = []
    only: list[str] = []
    ctx: RunContext | None = None
    try:
        stack = policy_stack(loaded, opts.policy)
        policy_files = [doc.file for _, doc in stack]
        devices = resolve_devices(stack)
        if opts.devices:
            config = config.model_copy(update={"devices": list(opts.devices)})
        if git is None and not opts.models:
            git = Git(root)
        check_devices(loaded, devices, opts.devices)
        check_paths(loaded, lambda: repository_files(root, git))
        # the configuration as written (a --device override is not an edgegate.yml change)
        discovery = discover(loaded.config, root, git, base=opts.base, head=opts.head,
                             explicit=opts.models,
                             config_file=loaded.source.file if loaded.source.data is not None else None)
        from edgegate.policy.integrity import resolve_policy

        base_sha = discovery.base or (git.rev(opts.base) if git is not None and opts.base else None)
        resolution = resolve_policy(loaded, opts.policy, git, base_sha)
        devices, policy_files, policy_changes = resolution.devices, resolution.files, resolution.changes
        for note in resolution.notes:
            progress.step(f"policy: {note}")
        if resolution.base_devices is not None and not opts.models:
            discovery = discovery.regate(_policy_reasons(discovery, config, devices,
                                                         resolution.base_devices), config)
        if resolution.base_config is not None and not opts.models and git is not None:
            discovery, devices, moved = _model_integrity(loaded, discovery, config, devices,
                                                         resolution, git)
            policy_changes = [*policy_changes, *moved]
        if opts.devices:
            discovery = replace(discovery, jobs=[
                replace(j, spec=j.spec.model_copy(update={"devices": list(opts.devices)}))
                for j in discovery.jobs])
        # names over every changed model, before --only narrows them: a matrix leg names a
        # model as the whole run does, so the legs' artifacts never overwrite each other
        discovery = replace(discovery, jobs=unique_names(discovery.jobs))
        if opts.only:
            from edgegate.gate.matrix import select_only

            discovery, only = select_only(discovery, opts.only, config)
        _check_devices(loaded, discovery, config, devices)
        for job in discovery.jobs:
            progress.step(f"{job.path}: gated because " + "; ".join(job.why or (job.change,)))
        ctx = RunContext(config=config, root=root, out_dir=out_dir, devices=devices,
                         progress=progress, keep_workdir=opts.keep_workdir,
                         footprints=Footprints.for_run(out_dir / ".work"))
        use = _cache_use(config, root, out_dir, opts, discovery, clock)
        mode = opts.baseline or config.baseline
        if not discovery.jobs:
            progress.step("no changed model to gate")
        for job in discovery.jobs:
            with progress.group(f"model {job.path} ({job.change})"):
                model = gate_cached(job, ctx, use)
                if discovery.base and git is not None:
                    model = base_results(job, model, discovery.base, git, loaded, ctx, use, mode,
                                         opts.policy)
                models.append(model)
        if use.cache is not None and discovery.unchanged:
            carried = carry_forward(discovery.unchanged, config, ctx, use)
    except EdgeGateError as exc:      # printed once, with its Fix:, by the CLI's verdict table
        errors.append(ErrorInfo(**describe(exc)))
    if ctx is not None:
        ctx.footprints.close()
    disk = _disk_usage(out_dir, ctx, opts.keep_workdir)
    report = Report(edgegate_version=__version__, created_at=clock(),
                    verdict=verdict_of(models, errors, policy_changes),
                    exit_code=exit_code_for(models, errors, policy_changes),
                    commits={"base": discovery.base, "head": discovery.head},
                    toolchain=toolchain(), machine=machine(), policy_files=policy_files,
                    models=models, removed=discovery.removed, unchanged=discovery.unchanged,
                    errors=errors, policy_changes=policy_changes, carried=carried, only=only,
                    disk=disk)
    write_report(report, out_dir / "report.json")
    write_rendered(report, out_dir)
    return report


def _model_integrity(loaded: LoadedConfig, discovery: Discovery, config, devices: dict,
                     resolution, git: Git):
    """Each model's own gating against the base commit's (policy/integrity.model_changes); a
    loosening the base commit does not allow is reported and refused: the model is gated on the
    base commit's devices and task as well."""
    from edgegate.discover import configured_models
    from edgegate.policy.integrity import model_changes, with_base_entry

    base_config, base_devices = resolution.base_config, resolution.base_devices or {}
    models = {j.path: j.old_path or j.path for j in discovery.jobs}
    models.update({m: m for m in discovery.unchanged if m not in models})
    if discovery.head:
        for m in configured_models(base_config, git, discovery.head):
            models.setdefault(m, m)
    allowed = base_config.allow_policy_changes
    # the configuration as written: a --device override is the runner's choice, not the PR's
    changes = model_changes(base_config, loaded.config, models, allowed, loaded.source.file,
                            f"@{(discovery.base or '')[:7]}", loaded.source.line_of)
    if not changes or allowed:
        return discovery, devices, changes
    refused = {c.model for c in changes}
    jobs = [replace(j, spec=with_base_entry(j.spec, config, base_config, j.old_path or j.path))
            if j.path in refused else j for j in discovery.jobs]
    devices = dict(devices)
    for job in jobs:
        for d in devices_for(job, config):
            if d not in devices and d in base_devices:
                devices[d] = base_devices[d]
    return replace(discovery, jobs=jobs), devices, changes


def _policy_reasons(discovery: Discovery, config, applied: dict[str, ResolvedDevice],
                    base: dict[str, ResolvedDevice]) -> dict[str, list[str]]:
    """Unchanged models whose devices are gated with other limits or settings than on the base
    commit (a refused loosening applies the base limits: no change, no re-gate)."""
    reasons: dict[str, list[str]] = {}
    for model in discovery.unchanged:
        spec = spec_for(config, model)
        if spec is None:
            continue
        why = []
        for d in spec.devices or config.devices:
            now, then = applied.get(d), base.get(d)
            if then is None or now is None or now.profile != then.profile:
                where = ", ".join(now.sources[1:] or now.sources) if now else "the policy"
                why.append(f"policy for {d} changed ({where})")
        reasons[model] = why
    return reasons


def write_error_report(exc: EdgeGateError, out_dir: Path, clock: Callable[[], str] = _now) -> Report:
    """The report of a run that stopped before gating anything (edgegate.yml refused or
    unreadable): one run-level error, written like any other report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    errors = [ErrorInfo(**describe(exc))]
    report = Report(edgegate_version=__version__, created_at=clock(),
                    verdict=verdict_of([], errors, []), exit_code=exit_code_for([], errors, []),
                    commits={"base": None, "head": None}, toolchain=toolchain(), machine=machine(),
                    policy_files=[], models=[], removed=[], unchanged=[], errors=errors,
                    policy_changes=[], carried=[], only=[],
                    disk=DiskUsage(artifact_bytes_total=0, work_bytes_peak=0, work_dir_removed=True))
    write_report(report, out_dir / "report.json")
    write_rendered(report, out_dir)
    return report


def _disk_usage(out_dir: Path, ctx: RunContext | None, keep_workdir: bool) -> DiskUsage:
    """Remove OUT/.work (unless --keep-work) and record what the run wrote."""
    work = out_dir / ".work"
    if not keep_workdir:
        shutil.rmtree(work, ignore_errors=True)
    return DiskUsage(artifact_bytes_total=tree_bytes(out_dir / "artifacts"),
                     work_bytes_peak=ctx.work_bytes_peak if ctx is not None else 0,
                     work_dir_removed=not work.exists())


def _cache_use(config, root: Path, out_dir: Path, opts: RunOptions, discovery: Discovery,
               clock: Callable[[], str]) -> CacheUse:
    cache = None
    if config.cache.enabled and not opts.no_cache:
        cache = ResultCache(default_cache_dir(config, root, out_dir, opts.cache_dir))
    return CacheUse(cache=cache, commit=discovery.head, created_at=clock(), tools=toolchain(),
                    machine=machine())


def _check_devices(loaded: LoadedConfig, discovery: Discovery, config, devices: dict) -> None:
    for job in discovery.jobs:
        for device in devices_for(job, config):
            if device not in devices:
                idx = next((i for i, m in enumerate(config.models) if m is job.spec), None)
                loc = ("models", idx, "devices") if idx is not None else ("devices",)
                raise ConfigError(f"unknown device '{device}'", file=loaded.source.file,
                                  line=loaded.source.line_of(loc), field=".".join(map(str, loc)),
                                  value=device,
                                  fix="use one of " + ", ".join(sorted(devices)) +
                                      ", or define it under 'devices:' in your policy file")
