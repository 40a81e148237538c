"""``edgegate targets``: each target and device, available here or not, why, how to install."""

from __future__ import annotations

import json

from edgegate.config.load import builtin_profiles, resolve_devices
from edgegate.targets import TARGETS, availability


def targets_listing(as_json: bool = False) -> str:
    rows = [availability(t) for t in TARGETS]
    devices = resolve_devices(builtin_profiles())
    if as_json:
        return json.dumps({
            "targets": [{"id": a.id, "can_compile": a.can_compile, "can_measure": a.can_measure,
                         "reason": a.reason, "install": a.install_hint} for a in rows],
            "devices": [{"id": d.id, "target": d.target, "candidates": d.profile.candidates,
                         "description": d.profile.description,
                         "limits": {k: v.value for k, v in d.limits.items()},
                         **dict(zip(("state", "why", "install"),
                                    device_state(d, {a.id: a for a in rows}.get(d.target))))}
                        for d in devices.values()]}, indent=2)
    out = ["targets:"]
    for a in rows:
        state = ("available" if a.can_measure else
                 "builds here, cannot measure" if a.can_compile else "unavailable")
        line = f"  {a.id:<12} {state:<28} {a.reason}"
        if a.install_hint:
            line += f"  ->  {a.install_hint}"
        out.append(line)
    out.append("")
    out.append("devices (built-in profiles; override or add your own in a policy file):")
    by_id = {a.id: a for a in rows}
    for d in devices.values():
        state, why, hint = device_state(d, by_id.get(d.target))
        limits = ", ".join(f"{k}={v.value:g}" for k, v in sorted(d.limits.items()))
        out.append(f"  {d.id:<18} {d.target:<12} {state:<26} {limits}")
        if why:
            out.append(f"  {'':<18} {'':<12} why: {why}" + (f"  ->  {hint}" if hint else ""))
        if d.profile.candidates:
            each = ", ".join(f"{t} ({'available' if t in by_id and by_id[t].can_measure else 'not here'})"
                             for t in d.profile.candidates)
            out.append(f"  {'':<18} {'':<12} candidates, measured side by side: {each}")
    return "\n".join(out)


def device_state(d, a) -> tuple[str, str | None, str | None]:
    """(state, why, install hint) of a device on this machine."""
    if a is None:
        return "unknown target", f"no target '{d.target}'", None
    if not a.can_compile:
        return "unavailable here", a.reason, a.install_hint
    if getattr(d.profile, "compiler", None) == "edgetpu":
        import shutil

        if shutil.which("edgetpu_compiler") is None:
            return ("measured here (host CPU)",
                    "the Edge TPU compile step is not available: edgetpu_compiler ships only from "
                    "Google's Coral apt repository; the full-integer TFLite model is shipped instead",
                    "apt-get install edgetpu-compiler (after adding packages.cloud.google.com/apt "
                    "coral-edgetpu-stable)")
    if a.can_measure:
        return ("measured here (host CPU)" if d.target == "tflite" else "measured here"), None, None
    return "built here, not measured", a.reason, a.install_hint
