"""Why a model is gated: anything that decides its result changed between base and head.

A model's result depends on its file, its calibration and evaluation data, the code its entry
names (a PyTorch factory, a custom metric), its edgegate.yml entry with the defaults it inherits
(devices, quantization, benchmark) and the limits of its devices. A change to any of them re-gates
the model, and the job says which (``ModelJob.why``, ``why`` on the model in report.json).
"""

from __future__ import annotations

from edgegate.config.schema import Config, ModelSpec

FIRST_COMMIT = "no base commit (first commit): every configured model is gated"
NEW_CONFIG = "edgegate.yml is new on this commit: every configured model is gated"

# Config keys a model entry inherits: a change to one of them changes every model that uses it.
INHERITED = ("devices", "quantization", "benchmark")


def _module_file(ref: str | None) -> str | None:
    if not ref or ":" not in ref:
        return None
    return ref.split(":", 1)[0].replace(".", "/") + ".py"


def inputs_of(spec: ModelSpec) -> list[tuple[str, str]]:
    """(role, repository path) of every file besides the model that decides its result."""
    out: list[tuple[str, str]] = []
    cal = spec.calibration_spec()
    if cal is not None and cal.data:
        out.append(("calibration data", cal.data))
    if spec.evaluation is not None:
        if spec.evaluation.data:
            out.append(("evaluation data", spec.evaluation.data))
        if spec.evaluation.metric not in ("top1", "top5", "mse", "fidelity"):
            module = _module_file(spec.evaluation.metric)
            if module:
                out.append(("metric code", module))
    module = _module_file(spec.factory)
    if module:
        out.append(("factory code", module))
    return out


def _under(changed: str, path: str) -> bool:
    path = path.strip("/").removeprefix("./")
    return changed == path or changed.startswith(path.rstrip("/") + "/")


def data_reasons(spec: ModelSpec, changed: list[str]) -> list[str]:
    reasons = []
    for role, path in inputs_of(spec):
        hits = [c for c in changed if _under(c, path)]
        if hits:
            reasons.append(f"{role} changed ({path})")
    return reasons


def effective_entry(config: Config, spec: ModelSpec | None) -> dict | None:
    """What the entry decides for a model, with the defaults it inherits from the config."""
    if spec is None:
        return None
    entry = spec.model_dump(mode="json", exclude={"path"})
    entry["devices"] = list(spec.devices or config.devices)
    entry["quantization.defaults"] = config.quantization.model_dump(mode="json")
    entry["benchmark"] = config.benchmark.model_dump(mode="json")
    return entry


def entry_reasons(base: Config | None, head: Config, base_spec: ModelSpec | None,
                  head_spec: ModelSpec) -> list[str]:
    if base is None:
        return [NEW_CONFIG]
    old, new = effective_entry(base, base_spec), effective_entry(head, head_spec)
    if old is None:
        return ["edgegate.yml entry added"]
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not keys:
        return []
    return ["edgegate.yml entry changed: " + ", ".join(k.replace(".defaults", "") for k in keys)]
