"""Policy integrity: a pull request cannot quietly loosen the limits it is gated by.

The limits are read from the BASE commit (its edgegate.yml and the policy file it names, via
``git show``) and compared with the pull request's. A loosened limit (a larger max_*, a smaller
min_*, a removed limit, a more lenient accuracy_decision) is reported old -> new and fails the
gate, and the base commit's limits are applied, unless the base commit's edgegate.yml says
``allow_policy_changes: true``. Tightened or new limits are reported and applied. Devices the base
commit did not define are taken from the pull request (they have no earlier limits to loosen),
but a model the base commit gated cannot be moved onto one: ``model_changes`` compares each
model's own gating (its devices, its task, being configured at all) with the base commit's, and
a refused loosening gates the model on the base commit's devices and task as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgegate.config.load import (LoadedConfig, ResolvedDevice, _validate, builtin_profiles,
                                  load_policy, policy_stack, resolve_devices)
from edgegate.config.policy_schema import LIMITS, PolicyFile
from edgegate.config.schema import Config
from edgegate.config.yamlfile import load_yaml_text
from edgegate.discover.git import MISSING_COMMIT_FIX, Git
from edgegate.errors import ConfigError
from edgegate.report.model import PolicyChange

_DECISION_STRICTNESS = {"ci95_lower": 0, None: 1, "measured": 1, "ci95_upper": 2}


@dataclass(frozen=True)
class PolicyResolution:
    devices: dict[str, ResolvedDevice]
    files: list[str]
    changes: list[PolicyChange] = field(default_factory=list)
    base_config: Config | None = None
    notes: list[str] = field(default_factory=list)
    base_devices: dict[str, ResolvedDevice] | None = None   # None: no base commit configuration


def show_at(git: Git, commit: str, path: str) -> str | None:
    """The text of ``path`` (relative to the git client's folder) at ``commit``, or None."""
    return git.show(commit, path)


def resolve_policy(loaded: LoadedConfig, override: str | Path | None, git: Git | None,
                   base: str | None) -> PolicyResolution:
    """The devices and limits to gate with, and every limit the pull request changed."""
    head_stack = policy_stack(loaded, override)
    head = resolve_devices(head_stack)
    head_files = [doc.file for _, doc in head_stack]
    if git is None or base is None or loaded.source.data is None or not git.is_repo():
        return PolicyResolution(head, head_files)
    config_file = loaded.source.file
    if not git.has_commit(base):
        # a shallow clone: never mistake a commit that is not here for a first configuration
        raise ConfigError(f"the base commit {base[:12]} is not in this clone: the limits it sets "
                          "cannot be read", value=base, fix=MISSING_COMMIT_FIX)
    text = show_at(git, base, config_file)
    if text is None:
        return PolicyResolution(head, head_files, notes=[
            f"{config_file} does not exist on the base commit {base[:7]}: first configuration, "
            "its policy is taken as given"])
    tag = f"@{base[:7]}"
    base_config = _validate(Config, load_yaml_text(text, config_file + tag))
    base_stack = builtin_profiles()
    notes = []
    if base_config.policy:
        policy_text = show_at(git, base, base_config.policy)
        if policy_text is None:
            notes.append(f"the base commit's policy file {base_config.policy} is missing there; "
                         "its built-in profiles are the baseline")
        else:
            base_stack.append((_validate(PolicyFile, load_yaml_text(policy_text, base_config.policy + tag)),
                               load_yaml_text(policy_text, base_config.policy + tag)))
    if override:
        base_stack.append(load_policy(override, display=str(override)))
    base_devices = resolve_devices(base_stack)
    allowed = base_config.allow_policy_changes
    changes = diff_limits(base_devices, head, allowed)
    loosened = [c for c in changes if c.change == "loosened"]
    if loosened and not allowed:
        effective = {**head, **base_devices}
        files = [doc.file for _, doc in base_stack]
        notes.append("limits were loosened without allow_policy_changes on the base commit: "
                     "the base commit's limits were applied")
        return PolicyResolution(effective, files, changes, base_config, notes, base_devices)
    return PolicyResolution(head, head_files, changes, base_config, notes, base_devices)


def diff_limits(base: dict[str, ResolvedDevice], head: dict[str, ResolvedDevice],
                allowed: bool) -> list[PolicyChange]:
    changes: list[PolicyChange] = []
    for dev_id in sorted(base):
        old_dev, new_dev = base[dev_id], head.get(dev_id)
        for name in LIMITS:
            old = old_dev.limits.get(name)
            new = new_dev.limits.get(name) if new_dev else None
            if old is None and new is None:
                continue
            if old is not None and new is not None and old.value == new.value:
                continue
            if new is None:
                kind = "loosened"
            elif old is None:
                kind = "tightened"
            else:
                larger = new.value > old.value
                kind = "loosened" if larger == (LIMITS[name][0] == "max") else "tightened"
            changes.append(PolicyChange(
                device=dev_id, limit=name, old=old.value if old else None,
                new=new.value if new else None, change=kind,
                source=(new or old).source if new else f"{old.source} (removed)",
                allowed=allowed or kind == "tightened"))
        if new_dev is not None and new_dev.target != old_dev.target:
            # another runtime measures the device (one that cannot be timed here leaves its
            # latency limits unmeasured): the base commit's device applies unless allowed
            changes.append(PolicyChange(
                device=dev_id, limit="target", old=None, new=None, change="loosened",
                source=f"{new_dev.sources[-1]}: {old_dev.target} -> {new_dev.target}",
                allowed=allowed))
        old_d = old_dev.profile.accuracy_decision
        new_d = new_dev.profile.accuracy_decision if new_dev else None
        if _DECISION_STRICTNESS[old_d] != _DECISION_STRICTNESS[new_d]:
            kind = "loosened" if _DECISION_STRICTNESS[new_d] < _DECISION_STRICTNESS[old_d] else "tightened"
            changes.append(PolicyChange(
                device=dev_id, limit="accuracy_decision", old=None, new=None, change=kind,
                source=f"{(new_dev or old_dev).sources[-1]}: {old_d or 'measured'} -> {new_d or 'measured'}",
                allowed=allowed or kind == "tightened"))
    return changes


# ---------------------------------------------------------------- a model's own gating


@dataclass(frozen=True)
class ModelEntry:
    """What decides how one model is gated, besides its devices' limits."""

    devices: tuple[str, ...]
    task: str
    where: str                         # file:line of the entry (or of the default devices)


def entry_of(config: Config, path: str, display: str, line_of=None) -> ModelEntry | None:
    """The gating entry of ``path`` under ``config`` (None: the model is not configured)."""
    from edgegate.discover import spec_for

    spec = spec_for(config, path)
    if spec is None:
        return None
    idx = next(i for i, m in enumerate(config.models) if m is spec)
    line = line_of(("models", idx)) if line_of else None
    return ModelEntry(tuple(spec.devices or config.devices), spec.task,
                      f"{display}:{line}" if line else f"{display} (models[{idx}])")


def model_changes(base_config: Config, head_config: Config, models: dict[str, str],
                  allowed: bool, config_file: str, base_tag: str, line_of=None) -> list[PolicyChange]:
    """Loosenings a pull request can make without touching a limit: a model taken off a device
    it was gated on (moved to another device, or to a new device profile with no limits), its
    declared ``task`` changed (another fidelity metric gated), or a model the base commit gated
    no longer configured. ``models``: head path -> base path, for
    every model the base commit's configuration gates that is still in the pull request."""
    changes: list[PolicyChange] = []

    def change(model: str, device: str, limit: str, what: str, source: str) -> None:
        changes.append(PolicyChange(device=device, limit=limit, old=None, new=None,
                                    change="loosened", source=f"{source}: {what}",
                                    allowed=allowed, model=model))

    for head_path, base_path in sorted(models.items()):
        then = entry_of(base_config, base_path, config_file + base_tag)
        if then is None:
            continue
        now = entry_of(head_config, head_path, config_file, line_of)
        if now is None:
            change(head_path, ", ".join(then.devices), "configured",
                   f"gated on the base commit ({then.where}), not configured in this pull request",
                   config_file)
            continue
        for device in then.devices:
            if device not in now.devices:
                moved = [d for d in now.devices if d not in then.devices]
                onto = f", now on {', '.join(moved)}" if moved else ""
                change(head_path, device, "devices",
                       f"no longer gated on {device}{onto} (was {then.where})", now.where)
        if then.task != now.task:
            change(head_path, ", ".join(now.devices), "task",
                   f"{then.task} -> {now.task} (the fidelity metric gated follows the task)",
                   now.where)
    return changes


def with_base_entry(spec, config: Config, base_config: Config, base_path: str):
    """A loosening refused: the model is gated on every device the base commit gated it on
    (the pull request's own devices too) and with the base commit's task."""
    from edgegate.discover import spec_for

    then = spec_for(base_config, base_path)
    if then is None:
        return spec
    devices = list(dict.fromkeys([*(then.devices or base_config.devices),
                                  *(spec.devices or config.devices)]))
    return spec.model_copy(update={"devices": devices, "task": then.task})
