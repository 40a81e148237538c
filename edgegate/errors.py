"""One error tree. Every error says what failed, the value seen, and how to fix it.

Library code raises these; only the CLI and the entrypoint turn them into exit codes:
``ConfigError`` and ``InputError`` -> 2, anything else -> 3.
"""

from __future__ import annotations


class EdgeGateError(Exception):
    """Base of every error EdgeGate raises on purpose."""

    exit_code = 3
    kind = "internal"

    def __init__(self, what: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, value: object = None, fix: str | None = None,
                 more: tuple[EdgeGateError, ...] = ()):
        self.what = what
        self.more = tuple(more)         # further problems found in the same pass (each its own line)
        self.file = file
        self.line = line
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(self.full)

    @property
    def where(self) -> str:
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line else str(self.file)

    @property
    def message(self) -> str:
        """One line: ``file:line: field: what, got X`` (the parts that are known)."""
        parts = []
        if self.where:
            parts.append(f"{self.where}:")
        if self.field:
            parts.append(f"{self.field}:")
        text = self.what.rstrip(". ")
        if self.value is not None:
            seen = repr(self.value)
            if len(seen) > 200:
                seen = seen[:197] + "..."
            text += f", got {seen}"
        parts.append(text)
        return " ".join(parts)

    @property
    def full(self) -> str:
        """The message and the fix on one line, for warnings and logs."""
        return f"{self.message}. Fix: {self.fix}" if self.fix else self.message

    @property
    def terminal(self) -> str:
        """What the CLI and the Action print: per problem one line naming file:line and field,
        then its ``Fix:`` line."""
        out = []
        for problem in (self, *self.more):
            out.append(problem.message)
            if problem.fix:
                out.append(f"Fix: {problem.fix}")
        return "\n".join(out)

    def to_dict(self) -> dict:
        message = self.message
        if self.more:
            message += "; also: " + "; ".join(p.message for p in self.more)
        return {"kind": self.kind, "message": message, "file": self.file, "line": self.line,
                "field": self.field, "fix": self.fix}


class InternalError(EdgeGateError):
    """A bug guard tripped: EdgeGate was about to produce something it knows is wrong."""

    kind = "internal"


class ConfigError(EdgeGateError):
    """edgegate.yml or a policy file is invalid."""

    exit_code = 2
    kind = "config"


class InputError(EdgeGateError):
    """A model or data file is missing, corrupt, untrusted or does not fit the model."""

    exit_code = 2
    kind = "input"


class UnsafeInputError(InputError):
    """Loading this input would execute code from it, or escape the workspace."""

    kind = "unsafe-input"


class DependencyError(EdgeGateError):
    """An optional framework is not installed."""

    exit_code = 2
    kind = "dependency"


class TargetUnavailable(EdgeGateError):
    """A target cannot compile or run on this machine (no CUDA device, not macOS, ...)."""

    exit_code = 2
    kind = "unavailable"


class ConversionError(InputError):
    """A model could not be converted, compiled or quantized."""

    kind = "conversion"


class IsolationError(EdgeGateError):
    """A child process crashed, ran out of memory or timed out."""

    kind = "isolation"


class GitHubError(EdgeGateError):
    """A GitHub API call failed after retries."""

    kind = "github"


def describe(exc: BaseException) -> dict:
    """A JSON-able description of any exception, for report rows."""
    if isinstance(exc, EdgeGateError):
        return exc.to_dict()
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}", "file": None,
            "line": None, "field": None,
            "fix": "this is a bug in EdgeGate or a toolchain; please report it with report.json"}
