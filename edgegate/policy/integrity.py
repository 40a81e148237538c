"""Policy integrity: a pull request cannot quietly loosen the limits it is gated by.

The limits are read from the BASE commit (its edgegate.yml and the policy file it names, via
``git show``) and compared with the pull request's. A loosened limit (a larger max_*, a smaller
min_*, a removed limit, a more lenient accuracy_decision) is reported old -> new and fails the
gate, and the base commit's limits are applied, unless the base commit's edgegate.yml says
``allow_policy_changes: true``. Tightened or new limits are reported and applied. Devices the base
commit did not define are taken from the pull request (they have no earlier limits to loosen).
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
        old_d = old_dev.profile.accuracy_decision
        new_d = new_dev.profile.accuracy_decision if new_dev else None
        if _DECISION_STRICTNESS[old_d] != _DECISION_STRICTNESS[new_d]:
            kind = "loosened" if _DECISION_STRICTNESS[new_d] < _DECISION_STRICTNESS[old_d] else "tightened"
            changes.append(PolicyChange(
                device=dev_id, limit="accuracy_decision", old=None, new=None, change=kind,
                source=f"{(new_dev or old_dev).sources[-1]}: {old_d or 'measured'} -> {new_d or 'measured'}",
                allowed=allowed or kind == "tightened"))
    return changes
