"""`edgegate init`: a repository's first configuration, from the models and data found in it.

Writes edgegate.yml (one entry per model, its inputs and the data files that fit them), the policy
stub .edgegate/policy.yml, the workflow .github/workflows/edgegate.yml and the .gitignore lines
for the run outputs. A file that exists is left alone unless ``force``; .gitignore is only ever
appended to. Everything written is loaded back with the project's own loaders before returning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgegate.config.check import check_devices
from edgegate.config.load import (LoadedConfig, builtin_profiles, load_config, load_policy,
                                  resolve_devices)
from edgegate.config.schema import Config
from edgegate.config.yamlfile import Sourced
from edgegate.discover.git import Git
from edgegate.errors import EdgeGateError, InputError, InternalError
from edgegate.init.found import FoundModel, choose_data, find_models, read_data_files, repo_files
from edgegate.init.texts import (CONFIG, GITIGNORE_LINES, OUT_DIR, POLICY, WORKFLOW, config_text,
                                 policy_text, workflow_text)

__all__ = ["InitResult", "init_repo"]


@dataclass
class InitResult:
    root: Path
    models: list[FoundModel]
    data: dict[str, list[str]]                        # model path -> data files chosen
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # existed; --force overwrites
    gitignore: list[str] = field(default_factory=list)  # lines appended to .gitignore
    notes: list[str] = field(default_factory=list)


def init_repo(root: str | Path, *, force: bool = False, devices: list[str] | None = None,
              git: Git | None = None) -> InitResult:
    root = Path(root)
    if not root.is_dir():
        raise InputError("the folder to initialise does not exist", file=str(root),
                         fix="create it, or pass the repository's folder: edgegate init DIR")
    profiles = resolve_devices(builtin_profiles())
    devices = list(dict.fromkeys(devices or ["x86-cpu"]))
    check_devices(LoadedConfig(Config(version=1), Sourced(None, "(defaults)"), root), profiles, devices)
    git = git or Git(root)
    in_repo = git.is_repo()
    files = repo_files(root, git if in_repo else None)
    models = find_models(root, files)
    data_files = read_data_files(root, files)
    chosen = [(m, choose_data(m, data_files)) for m in models]
    result = InitResult(root, models, {m.path: [p for p in (d.calibration, d.evaluation) if p]
                                       for m, d in chosen})

    other = [d for d in profiles if d not in devices]
    texts = {CONFIG: config_text(chosen, devices, other),
             POLICY: policy_text([profiles[d] for d in devices]),
             WORKFLOW: workflow_text()}
    top = Path(git.run("rev-parse", "--show-toplevel").strip()) if in_repo else None
    if top is not None and top.resolve() != root.resolve():
        texts.pop(WORKFLOW)
        result.notes.append(f"{root} is not the top folder of its git repository ({top}): the "
                            f"workflow was not written (GitHub reads {WORKFLOW} there only, and the "
                            "Action reads edgegate.yml at the top); run 'edgegate init' in the top folder")
    for name, text in texts.items():
        path = root / name
        if path.exists() and not force:
            result.skipped.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        result.written.append(name)
    _check_written(root, result.written)
    result.gitignore = _append_gitignore(root / ".gitignore")
    result.notes += _notes(result, git if in_repo else None)
    return result


def _check_written(root: Path, written: list[str]) -> None:
    """What init wrote must load: a failure here is EdgeGate's bug, not the user's."""
    try:
        if CONFIG in written:
            load_config(root / CONFIG)
        if POLICY in written:
            load_policy(root / POLICY, display=POLICY)
    except EdgeGateError as exc:
        raise InternalError(f"edgegate init wrote a file its own loader refuses: {exc.full}",
                            fix="report this bug; edit the file by hand meanwhile") from exc


def _append_gitignore(path: Path) -> list[str]:
    """Append the lines that are missing (never rewrite what is there); return them."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line not in present]
    if missing:
        block = (f"# EdgeGate run outputs (report, artifacts, cache); {POLICY} is committed\n" + "".join(line + "\n" for line in missing))
        end = "" if not text or text.endswith("\n") else "\n"
        gap = "\n" if text.strip() else ""
        with path.open("a", encoding="utf-8") as fh:
            fh.write(end + gap + block)
    return missing


def _notes(result: InitResult, git: Git | None) -> list[str]:
    notes = []
    if git is None:
        notes.append("not a git repository: 'edgegate run' without MODEL gates the models changed "
                     "between two commits, and the workflow needs one; run 'git init'")
    else:
        ignored = git.run("check-ignore", "--no-index", POLICY, f"{OUT_DIR}/report.json",
                          check=False).split()
        if POLICY in ignored:
            notes.append(f".gitignore ignores {POLICY}, which is meant to be committed: remove the "
                         f"entry that ignores the {POLICY.split('/')[0]}/ folder (the run outputs "
                         f"go to {OUT_DIR}/, ignored by the line " + " ".join(GITIGNORE_LINES) + ")")
    if not result.models:
        notes.append("no model files found: add entries to edgegate.yml by hand")
    for model in result.models:
        if model.inputs is None:
            notes.append(f"{model.path}: {model.note or 'inputs not read'}; see the comments in "
                         f"{CONFIG} for what to fill in")
        elif not result.data[model.path]:
            notes.append(f"{model.path}: no data files fit its inputs: it calibrates on random "
                         f"inputs until you add some (see the comments in {CONFIG})")
    return notes
