"""The GitHub Actions side of a run: inputs, the event, workflow commands (annotations, masks,
groups), step outputs ($GITHUB_OUTPUT) and the job summary ($GITHUB_STEP_SUMMARY, 1 MiB)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Mapping

from edgegate.errors import ConfigError, InputError
from edgegate.trust.logsafe import escape_data, escape_property

SUMMARY_LIMIT_BYTES = 1 << 20
MAX_EVENT_BYTES = 25 << 20


def input_value(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """An action input. The runner sets INPUT_<NAME> upper-cased with spaces as '_' and hyphens
    kept (INPUT_GITHUB-TOKEN), which shells cannot read; INPUT_GITHUB_TOKEN is accepted too."""
    upper = name.upper().replace(" ", "_")
    for key in (f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"):
        value = env.get(key)
        if value is not None and value.strip() != "":
            return value.strip()
    return default


def input_list(env: Mapping[str, str], name: str) -> list[str]:
    raw = input_value(env, name) or ""
    return [p for p in (x.strip() for x in raw.replace(",", "\n").splitlines()) if p]


def input_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = (input_value(env, name) or default).lower()
    if value not in choices:
        raise ConfigError(f"input '{name}' must be one of {', '.join(choices)}", field=name,
                          value=value, fix=f"set '{name}:' in the workflow's 'with:' block")
    return value


def read_event(env: Mapping[str, str]) -> dict:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError("GITHUB_EVENT_PATH does not name a file", file=path,
                         fix="run inside GitHub Actions, or point GITHUB_EVENT_PATH at an event JSON")
    if p.stat().st_size > MAX_EVENT_BYTES:
        raise InputError("the event payload is larger than 25 MiB", file=path, fix="check the runner")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the event payload is not JSON: {exc}", file=path,
                         fix="check GITHUB_EVENT_PATH") from None
    return data if isinstance(data, dict) else {}


@dataclass
class Annotation:
    level: str                 # error | warning | notice
    message: str
    file: str | None = None
    line: int | None = None
    title: str | None = None

    def command(self) -> str:
        props = []
        if self.file:
            props.append(f"file={escape_property(self.file)}")
        if self.line:
            props.append(f"line={int(self.line)}")
        if self.title:
            props.append(f"title={escape_property(self.title)}")
        level = self.level if self.level in ("error", "warning", "notice") else "warning"
        head = f"::{level}" + (" " + ",".join(props) if props else "")
        return f"{head}::{escape_data(self.message)}"


class Workflow:
    """Writes workflow commands to a stream and files named by the runner's environment."""

    def __init__(self, env: Mapping[str, str], stream: IO[str]):
        self.env = env
        self.stream = stream
        self.outputs: dict[str, str] = {}

    def command(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def annotate(self, annotation: Annotation) -> None:
        self.command(annotation.command())

    def set_output(self, name: str, value: object) -> None:
        text = "" if value is None else str(value)
        self.outputs[name] = text
        path = self.env.get("GITHUB_OUTPUT")
        if not path:
            return
        delimiter = f"ghadelimiter_{uuid.uuid4()}"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{name}<<{delimiter}\n{text}\n{delimiter}\n")

    def append_summary(self, markdown: str) -> int:
        """Append to the job summary within GitHub's 1 MiB per step; returns bytes written."""
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if not path:
            return 0
        p = Path(path)
        used = p.stat().st_size if p.is_file() else 0
        data = markdown.encode("utf-8")
        room = SUMMARY_LIMIT_BYTES - used
        if len(data) > room:
            note = ("\n\n… the summary was cut to fit GitHub's 1 MiB limit; report.json has "
                    "everything.\n").encode("utf-8")
            keep = max(0, room - len(note))
            data = data[:keep].decode("utf-8", errors="ignore").encode("utf-8") + note
            if len(data) > room:
                return 0
        with open(p, "ab") as fh:
            fh.write(data)
        return len(data)
