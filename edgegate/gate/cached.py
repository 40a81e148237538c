"""Gate one model through the results cache: hits are restored, misses are gated and stored.

A model whose every device hits is never loaded, converted or compiled. Unchanged models of the
repository are carried forward into the report when all their results are in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgegate.gate.cache import ResultCache, content_sha256, data_hashes, result_key
from edgegate.config.schema import Config
from edgegate.discover import ModelJob, spec_for
from edgegate.errors import EdgeGateError
from edgegate.gate.model import (RunContext, devices_for, gate_model, guarded_model_path, model_name,
                               slug)
from edgegate.policy.check import check_result, model_status
from edgegate.report.model import CacheInfo, ModelReport


@dataclass(frozen=True)
class CacheUse:
    cache: ResultCache | None
    commit: str | None          # the commit being gated (recorded with stored entries)
    created_at: str | None
    tools: dict
    machine: dict


def _keys(job: ModelJob, ctx: RunContext, use: CacheUse) -> dict[str, str] | None:
    if use.cache is None:
        return None
    try:
        path = guarded_model_path(job, ctx.root)    # the path guard first: nothing is hashed outside
        if not path.exists():
            return None
        sha = content_sha256(path, ctx.root)
        data = data_hashes(job.spec, ctx.root)
        return {d: result_key(sha, ctx.devices[d], job.spec, ctx.config, data, use.tools, use.machine)
                for d in devices_for(job, ctx.config) if d in ctx.devices}
    except (EdgeGateError, OSError):
        return None


def gate_cached(job: ModelJob, ctx: RunContext, use: CacheUse, compute: bool = True) -> ModelReport | None:
    """The model's report, from the cache where possible. With ``compute=False`` only a complete
    set of hits is returned (else None)."""
    keys = _keys(job, ctx, use)
    if keys is None:
        return gate_model(job, ctx) if compute else None
    name = model_name(job)
    devices = devices_for(job, ctx.config)
    hits = {}
    for d in devices:
        entry = use.cache.get(keys[d]) if d in keys else None
        if entry is not None:
            hits[d] = entry
            ctx.progress.step(f"{name} → {d}: cache hit (measured at "
                              f"{(entry.commit or 'an earlier run')[:12]}); nothing recomputed")
    missing = [d for d in devices if d not in hits]
    if missing and not compute:
        return None
    fresh = None
    if missing:
        sub = replace(job, spec=job.spec.model_copy(update={"devices": missing}))
        fresh = gate_model(sub, ctx)
        if fresh.error is not None:
            return fresh.model_copy(update={"change": job.change, "why": list(job.why)})
        for r in fresh.results:
            if d_key := keys.get(r.device):
                use.cache.put(d_key, fresh, r, ctx.out_dir, use.commit, use.created_at)
    by_device = {r.device: r for r in (fresh.results if fresh else [])}
    results = []
    for d in devices:
        if d in hits:
            r = use.cache.restore(hits[d], ctx.out_dir, slug(name), slug(d))
            if r.status in ("passed", "failed"):
                r = check_result(r.model_copy(update={"status": "passed"}), ctx.devices[d])
        else:
            r = by_device[d]
            if d in keys:
                r = r.model_copy(update={"cache": CacheInfo(key=keys[d], hit=False)})
        results.append(r)
    if fresh is not None:
        base = fresh.model_dump(exclude={"results", "status"})
    else:
        first = hits[devices[0]].model
        base = {**{k: v for k, v in first.items()}, "path": job.path, "name": name,
                "change": job.change, "old_path": job.old_path, "why": list(job.why)}
    report = ModelReport(**{**base, "results": results})
    return report.model_copy(update={"status": model_status(report)})


def carry_forward(paths: list[str], config: Config, ctx: RunContext, use: CacheUse) -> list[ModelReport]:
    """Unchanged models whose every result is in the cache, restored without recomputing."""
    carried = []
    for path in paths:
        spec = spec_for(config, path)
        if spec is None:
            continue
        report = gate_cached(ModelJob(path, spec, "unchanged"), ctx, use, compute=False)
        if report is not None:
            carried.append(report)
    return carried
