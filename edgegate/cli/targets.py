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
            "devices": [{"id": d.id, "target": d.target, "description": d.profile.description,
                         "limits": {k: v.value for k, v in d.limits.items()}}
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
        a = by_id.get(d.target)
        state = "measured here" if a and a.can_measure else \
            "built here, not measured" if a and a.can_compile else "unavailable here"
        limits = ", ".join(f"{k}={v.value:g}" for k, v in sorted(d.limits.items()))
        out.append(f"  {d.id:<18} {d.target:<12} {state:<26} {limits}")
    return "\n".join(out)
