"""Untrusted text on its way to a log: GitHub Actions workflow commands and terminals.

The Actions runner reads every line a step prints to stdout or stderr and runs it as a command
when, after leading whitespace, it starts with ``::`` (``::error file=...::``, ``::add-mask::``,
``::stop-commands::``, ...) or when it holds ``##[`` anywhere (the older form). It splits lines on
``\\n`` and on a lone ``\\r``. A model's file name, a path or an exception message from the pull
request must therefore never begin such a line. Three tools:

- ``escape_data`` / ``escape_property``: the value of a command EdgeGate emits on purpose,
  escaped the way GitHub's toolkit does (``%`` ``\\r`` ``\\n``, and ``:`` ``,`` in properties).
- ``log_text``: any other text printed for people. Line breaks are kept (tracebacks stay
  readable), but no line can start a command: a leading ``::`` is written ``%3A%3A``, ``##[`` is
  written ``##%5B``, a lone ``\\r`` and other control characters (terminal escapes included) show
  as ``\\xNN`` / ``<U+XXXX>``.
- ``CommandPause``: under Actions (``GITHUB_ACTIONS=true``), ``::stop-commands::<random token>``
  ... ``::<token>::`` around output EdgeGate does not control line by line (tracebacks, the
  toolchains and PR code writing to the inherited streams while a model is gated).
"""

from __future__ import annotations

import os
import re
import secrets
from typing import IO, Mapping

# bidi controls and invisible characters: a displayed name must not differ from the real one
INVISIBLE = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C,
                       0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF])

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\u2028\u2029"
                      + "".join(chr(c) for c in sorted(INVISIBLE)) + "]")


def visible(ch: str) -> str:
    """One control or invisible character as a visible escape."""
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"<U+{code:04X}>"


def show_hidden(text: object) -> str:
    """Control, bidi and zero-width characters as visible escapes (plain-text sinks such as a
    commit status description)."""
    return _CONTROL.sub(lambda m: visible(m.group()), str(text))


def escape_data(text: object) -> str:
    """A workflow command's message (after the second ``::``), as actions/toolkit escapes it."""
    return str(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: object) -> str:
    """A workflow command's property value (``file=``, ``title=``), as actions/toolkit does."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


_LEADING_COMMAND = re.compile(r"^(\s*)::", re.MULTILINE)


def log_text(text: object) -> str:
    """Text for a log line that no workflow command can come out of (see the module doc)."""
    s = str(text).replace("\r\n", "\n")
    s = _CONTROL.sub(lambda m: visible(m.group()), s)
    s = s.replace("##[", "##%5B")
    return _LEADING_COMMAND.sub(lambda m: m.group(1) + "%3A%3A", s)


def under_actions(env: Mapping[str, str] | None = None) -> bool:
    return (env if env is not None else os.environ).get("GITHUB_ACTIONS") == "true"


class CommandPause:
    """Stops the runner from processing workflow commands between ``start()`` and ``stop()``.

    The token is random per pause, so text printed inside cannot resume processing. Outside
    GitHub Actions both are no-ops. Re-entrant: nested starts keep the outer pause."""

    def __init__(self, stream: IO[str], env: Mapping[str, str] | None = None):
        self.stream = stream
        self.enabled = under_actions(env)
        self.token: str | None = None
        self.depth = 0

    @property
    def active(self) -> bool:
        return self.token is not None

    def start(self) -> None:
        self.depth += 1
        if not self.enabled or self.token is not None:
            return
        self.token = secrets.token_hex(16)
        print(f"::stop-commands::{self.token}", file=self.stream, flush=True)

    def stop(self) -> None:
        self.depth = max(0, self.depth - 1)
        if self.depth or self.token is None:
            return
        print(f"::{self.token}::", file=self.stream, flush=True)
        self.token = None

    def __enter__(self) -> "CommandPause":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def emit(self, command: str) -> None:
        """Print one command of EdgeGate's own: a pause in force is lifted for it, then resumed
        under a new token."""
        paused = self.token is not None
        if paused:
            print(f"::{self.token}::", file=self.stream, flush=True)
        print(command, file=self.stream, flush=True)
        if paused:
            self.token = secrets.token_hex(16)
            print(f"::stop-commands::{self.token}", file=self.stream, flush=True)
