"""Progress on long work: a live line in a terminal, ::group:: sections in GitHub Actions logs,
plain lines elsewhere, nothing with --quiet. Written to stderr so stdout stays for results.

Messages carry names and errors from the pull request: every line goes through
``logsafe.log_text`` (no workflow command, no terminal escape can come out of it), and in GitHub
Actions the work inside a group runs under ``::stop-commands::`` (``logsafe.CommandPause``)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import IO, Iterator

from edgegate.trust.logsafe import CommandPause, escape_data, log_text


class Progress:
    """Plain lines with elapsed time (CI logs, pipes)."""

    def __init__(self, stream: IO[str] | None = None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()

    def _elapsed(self) -> str:
        return f"{self.clock() - self.started:6.1f}s"

    def step(self, message: str) -> None:
        print(f"[{self._elapsed()}] {log_text(message)}", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(f"[{self._elapsed()}] warning: {log_text(message)}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        self.step(title)
        yield


class GitHubProgress(Progress):
    """Collapsible ::group:: sections and ::warning:: lines in a GitHub Actions log. Inside a
    group, workflow commands are stopped (a random token), so whatever a toolchain or the pull
    request's code prints to the inherited streams is shown, never run."""

    def __init__(self, stream: IO[str] | None = None, clock=time.monotonic, env=None):
        super().__init__(stream, clock)
        self.pause = CommandPause(self.stream, env if env is not None else {"GITHUB_ACTIONS": "true"})

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        self.pause.emit(f"::group::{escape_data(title)}")
        self.pause.start()
        try:
            yield
        finally:
            self.pause.stop()
            self.pause.emit("::endgroup::")

    def warn(self, message: str) -> None:
        self.pause.emit(f"::warning::{escape_data(message)}")


class TerminalProgress(Progress):
    """Steps on one live line; finished groups stay on screen."""

    def __init__(self, stream: IO[str] | None = None, clock=time.monotonic):
        super().__init__(stream, clock)
        self._title = ""

    def step(self, message: str) -> None:
        line = f"  {self._elapsed()}  {log_text(message)}"
        width = 100
        print("\r\033[K" + line[:width], end="", file=self.stream, flush=True)

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        self._title = title
        print(f"\r\033[K▶ {log_text(title)}", file=self.stream, flush=True)
        try:
            yield
        finally:
            print("\r\033[K", end="", file=self.stream, flush=True)

    def warn(self, message: str) -> None:
        print(f"\r\033[K  warning: {log_text(message)}", file=self.stream, flush=True)


class QuietProgress(Progress):
    def step(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def group(self, title: str) -> Iterator[None]:
        yield


def make_progress(quiet: bool = False, stream: IO[str] | None = None) -> Progress:
    stream = stream or sys.stderr
    if quiet:
        return QuietProgress(stream)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return GitHubProgress(stream)
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return TerminalProgress(stream)
    return Progress(stream)
