"""Candidate runtimes for one device: each compiled and measured, the best one shipped.

A device profile may list ``candidates: [onnxruntime, openvino]``. Each candidate goes through
the whole device gate (its own best configuration, its own FP32 baseline on the same runtime,
the same evaluation and the same policy check). Among those that meet the policy, the finalists
are then timed against each other, interleaved in one process, and the faster ships. A difference
whose 95 % interval includes 1 is noise: the profile's own ``target`` ships then, so the choice
does not flip from run to run. When no candidate meets the policy, the one with the fewest
violations (then the lowest latency) is reported. The others are kept under
``<out>/alternatives/`` (not released) and listed in ``DeviceResult.alternatives``.

With ``try_candidates: when-failing`` the profile's ``target`` is gated first and the other
candidates only when it misses the policy (or errors): a passing model costs one runtime.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Callable

from edgegate.errors import ConfigError, EdgeGateError, describe
from edgegate.report.model import Alternative, DeviceResult, ErrorInfo

MEASURED = ("passed", "failed")


def candidate_targets(device) -> list[str]:
    from edgegate.targets import TARGETS

    out: list[str] = []
    for target in device.profile.candidates or []:
        if target not in TARGETS:
            raise ConfigError(f"device '{device.id}' lists an unknown candidate target '{target}'",
                              field=f"devices.{device.id}.candidates", value=target,
                              file=device.sources[-1] if device.sources else None,
                              fix="use target ids from 'edgegate targets': " + ", ".join(TARGETS))
        if target not in out:
            out.append(target)
    return out


def gate_candidates(gate: Callable[..., DeviceResult], prepared, device, ctx, workdir) -> DeviceResult:
    """``gate`` is pipeline.gate_device; it runs once per candidate target."""
    started = time.monotonic()
    results: list[DeviceResult] = []
    try:
        targets = candidate_targets(device)
    except EdgeGateError as exc:
        return DeviceResult(device=device.id, target=device.target, status="error",
                            reason=exc.message, error=ErrorInfo(**describe(exc)))
    lazy = device.profile.try_candidates == "when-failing" and device.target in targets
    if lazy:         # the profile's own target first; the others only if it misses the policy
        targets = [device.target] + [t for t in targets if t != device.target]
    for target in targets:
        if lazy and results and results[0].status == "passed":
            first = results[0]
            return first.model_copy(update={
                "selection": f"{first.target} meets the policy; the other candidates "
                             f"({', '.join(t for t in targets if t != first.target)}) are measured "
                             "only when it does not (try_candidates: when-failing)",
                "duration_s": round(time.monotonic() - started, 2)})
        profile = device.profile.model_copy(update={"target": target, "candidates": None,
                                                    "try_candidates": None})
        one = dataclasses.replace(device, target=target, profile=profile)
        ctx.progress.step(f"{prepared.name} → {device.id}: candidate runtime {target}")
        results.append(gate(prepared, one, ctx, workdir / f"candidate-{target}"))
    threads = device.profile.threads or ctx.config.benchmark.threads
    feed = prepared.data.evaluation.feed(0)
    chosen, why, h2h = choose(results, device.target, lambda a, b: head_to_head(a, b, ctx, threads, feed))
    alternatives = []
    for r in results:
        if r is chosen:
            continue
        alternatives.append(_alternative(r, ctx.out_dir, h2h.get(r.target)))
    return chosen.model_copy(update={"alternatives": alternatives, "selection": why,
                                     "duration_s": round(time.monotonic() - started, 2)})


def _latency(r: DeviceResult) -> float:
    v = r.metrics.latency_p50_ms_after
    return float("inf") if v is None else v


def choose(results: list[DeviceResult], primary: str,
           compare: Callable[[DeviceResult, DeviceResult], tuple[float, tuple[float, float]]]
           ) -> tuple[DeviceResult, str, dict[str, dict]]:
    """The result to ship, why, and per other target its interleaved latency ratio to the chosen
    one. ``compare(a, b)`` times a and b interleaved -> (p50 of b / p50 of a, its 95 % interval)."""
    passed = sorted((r for r in results if r.status == "passed"), key=_latency)
    measured = sorted((r for r in results if r.status == "failed"),
                      key=lambda r: (len(r.violations), _latency(r)))
    if not passed and not measured:
        order = {"skipped": 1, "error": 0}       # an error says more than a skip
        ranked = sorted(results, key=lambda r: order.get(r.status, 2))
        return ranked[0], "no candidate runtime could be measured here", {}
    pool = passed or [r for r in measured if len(r.violations) == len(measured[0].violations)]
    ranked = list(pool)
    h2h: dict[str, dict] = {}
    verdict = "meets the policy" if passed else "misses the policy (no candidate meets it)"
    if len(pool) == 1:
        others = [r.target for r in results if r is not pool[0]]
        why = (f"{pool[0].target} is the only candidate runtime that "
               f"{'meets the policy' if passed else 'was measured' if len(measured) == 1 else 'misses the policy by the fewest limits'}"
               + (f" (also tried: {', '.join(others)})" if others else ""))
        return pool[0], why, h2h
    first, second = ranked[0], ranked[1]
    try:
        ratio, ci = compare(first, second)         # second's p50 / first's p50
    except Exception as exc:                       # a runner that cannot load twice: own timings
        ratio, ci = _latency(second) / _latency(first), (float("nan"), float("nan"))
        note = f" (interleaved comparison failed: {type(exc).__name__}; separate timings used)"
    else:
        note = ""
    if ci[0] > 1.0:
        winner, loser, r, c = first, second, ratio, ci
        why = (f"{first.target} {verdict} and was measured {ratio:.2f}× faster than {second.target} "
               f"(interleaved, 95 % CI {ci[0]:.2f}–{ci[1]:.2f}){note}")
    elif ci[1] < 1.0:                              # the second is faster after all
        winner, loser, r, c = second, first, 1 / ratio, (1 / ci[1], 1 / ci[0])
        why = (f"{second.target} {verdict} and was measured {r:.2f}× faster than {first.target} "
               f"(interleaved, 95 % CI {c[0]:.2f}–{c[1]:.2f}){note}")
    else:
        winner = next((x for x in (first, second) if x.target == primary), first)
        loser = second if winner is first else first
        r = ratio if winner is first else 1 / ratio
        c = ci if winner is first else (1 / ci[1] if ci[1] else float("nan"), 1 / ci[0] if ci[0] else float("nan"))
        why = (f"{first.target} and {second.target} both {'meet' if passed else 'miss'} the policy and "
               f"their latencies are not distinguishable here ({loser.target}/{winner.target} "
               f"p50 ratio {r:.2f}, 95 % CI {c[0]:.2f}–{c[1]:.2f}){note}; "
               + (f"{winner.target} is the device profile's target" if winner.target == primary
                  else f"{winner.target} had the lower p50"))
    h2h[loser.target] = {"ratio": round(r, 3),
                         "ci95": [round(v, 3) for v in c] if all(v == v for v in c) else None}
    others = [x for x in results if x is not winner and x is not loser]
    if others:
        why += "; also tried: " + ", ".join(f"{x.target} ({x.status})" for x in others)
    return winner, why, h2h


def head_to_head(a: DeviceResult, b: DeviceResult, ctx, threads, feed) -> tuple[float, tuple[float, float]]:
    from edgegate.stages.measurement import time_artifacts
    from edgegate.targets import load_target

    ra = load_target(a.target).runner(ctx.out_dir / a.artifact.path, threads, a.device,
                                      a.artifact.input_binding)
    rb = load_target(b.target).runner(ctx.out_dir / b.artifact.path, threads, b.device,
                                      b.artifact.input_binding)
    ctx.progress.step(f"{a.device}: timing {a.target} vs {b.target} interleaved")
    pair = time_artifacts(ra, rb, feed, ctx.config.benchmark)
    # speedup = a's p50 / b's p50; the ratio asked for is b / a
    return 1 / pair.speedup, (1 / pair.speedup_ci95[1], 1 / pair.speedup_ci95[0])


def _alternative(r: DeviceResult, out_dir: Path, h2h: dict | None) -> Alternative:
    """The candidate's record; its artifact moves out of artifacts/ (it is not released)."""
    kept = None
    if r.artifact is not None:
        src = out_dir / r.artifact.path
        dest_dir = out_dir / "alternatives"
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / src.name
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        if src.exists():
            shutil.move(str(src), dest)
            data = src.with_name(src.name + ".data")
            if data.is_file():
                shutil.move(str(data), dest.with_name(dest.name + ".data"))
            kept = dest.relative_to(out_dir).as_posix()
    m = r.metrics
    return Alternative(target=r.target, status=r.status, reason=r.reason,
                       precision=r.artifact.precision if r.artifact else None, artifact=kept,
                       sha256=r.artifact.sha256 if r.artifact else None,
                       size_bytes_after=m.size_bytes_after, latency_p50_ms_before=m.latency_p50_ms_before,
                       latency_p50_ms_after=m.latency_p50_ms_after, speedup=m.speedup,
                       accuracy_after=m.accuracy_after, accuracy_drop_pp=m.accuracy_drop_pp,
                       top1_agreement=m.top1_agreement, peak_memory_mb=m.peak_memory_mb,
                       violations=[v.limit for v in r.violations],
                       measurement=r.measurement, quantization_method=r.quantization.get("method"),
                       int8_mac_share=r.quantization.get("int8_mac_share"),
                       head_to_head=h2h)
