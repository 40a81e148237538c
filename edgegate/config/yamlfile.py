"""YAML loading that remembers where every value came from (file:line), and refuses bombs.

Values are built from the composed node tree by hand, so that aliases are counted as they expand
(a "billion laughs" file fails fast instead of filling memory) and nesting depth is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgegate.errors import ConfigError

MAX_BYTES = 1 << 20          # a config or policy file larger than 1 MiB is refused
MAX_NODES = 100_000          # nodes after alias expansion
MAX_DEPTH = 50

Loc = tuple  # a path into the document: ("models", 0, "path")


@dataclass(frozen=True)
class Sourced:
    """A parsed YAML document and the line of every value in it."""

    data: Any
    file: str
    lines: dict = field(default_factory=dict)   # Loc -> 1-based line
    builtin: bool = False                       # one of EdgeGate's own device profiles

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)


class _Builder:
    def __init__(self, file: str):
        self.file = file
        self.lines: dict = {}
        self.nodes = 0

    def build(self, node: yaml.Node, loc: Loc, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(f"the YAML document expands to more than {MAX_NODES} values "
                              "(alias bomb or runaway file)", file=self.file,
                              fix="remove the aliases or split the file")
        if depth > MAX_DEPTH:
            raise ConfigError(f"the YAML document nests deeper than {MAX_DEPTH} levels",
                              file=self.file, line=node.start_mark.line + 1,
                              fix="flatten the structure")
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise ConfigError("mapping keys must be plain scalars", file=self.file,
                                      line=key_node.start_mark.line + 1)
                key = _LOADER.construct_object(key_node)
                if key == "<<":
                    raise ConfigError("YAML merge keys ('<<') are not supported",
                                      file=self.file, line=key_node.start_mark.line + 1,
                                      fix="write the keys out")
                if key in out:
                    raise ConfigError(f"duplicate key '{key}'", file=self.file,
                                      line=key_node.start_mark.line + 1,
                                      fix="keep one of them")
                self.lines[loc + (key,)] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, loc + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, loc + (i,), depth + 1) for i, child in enumerate(node.value)]
        return _LOADER.construct_object(node)


_LOADER = yaml.SafeLoader("")


def load_yaml(path: str | Path, *, display: str | None = None) -> Sourced:
    """Parse ``path`` as YAML; errors name the file and line."""
    path = Path(path)
    name = display or str(path)
    if not path.is_file():
        raise ConfigError("file not found", file=name,
                          fix="create it, or point the option at the right path")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ConfigError(f"file is {size} bytes, more than the {MAX_BYTES} allowed",
                          file=name, fix="a configuration file should be small; check the path")
    text = path.read_text(encoding="utf-8", errors="replace")
    return load_yaml_text(text, name)


def load_yaml_text(text: str, name: str) -> Sourced:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", file=name, line=line,
                          fix="check indentation and quoting on that line") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=name) from None
    except RecursionError:               # the parser recurses per level: '[[[[...' exhausts it
        raise ConfigError(f"the YAML document nests deeper than {MAX_DEPTH} levels", file=name,
                          fix="flatten the structure") from None
    if node is None:
        return Sourced(data=None, file=name, lines={})
    builder = _Builder(name)
    try:
        data = builder.build(node, (), 0)
    except RecursionError:
        raise ConfigError("the YAML document nests too deeply", file=name) from None
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"unsupported YAML value: {exc.problem}", file=name, line=line) from None
    return Sourced(data=data, file=name, lines=builder.lines)
