"""A thin git client (injected wherever git is needed, so tests can point it at a temp repo)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgegate.errors import ConfigError, InputError


@dataclass(frozen=True)
class Change:
    status: str            # added | modified | renamed | deleted
    path: str              # path at head (at base for deleted)
    old_path: str | None = None


_STATUS = {"A": "added", "M": "modified", "R": "renamed", "D": "deleted", "C": "added",
           "T": "modified"}


class Git:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run(self, *args: str, check: bool = True) -> str:
        try:
            proc = subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=self.root,
                                  capture_output=True, timeout=120)
        except FileNotFoundError:
            raise InputError("git is not installed", fix="install git") from None
        # decoded here, not in text mode: universal newlines would turn a '\r' in a file name
        # into '\n' and the model would not be found
        stdout = proc.stdout.decode("utf-8", errors="surrogateescape")
        stderr = proc.stderr.decode("utf-8", errors="replace")
        if check and proc.returncode != 0:
            raise InputError(f"git {' '.join(args)} failed: {stderr.strip()}",
                             file=str(self.root),
                             fix="run inside a git repository with both commits fetched "
                                 "(actions/checkout with fetch-depth: 0)")
        return stdout

    def is_repo(self) -> bool:
        return self.run("rev-parse", "--is-inside-work-tree", check=False).strip() == "true"

    def rev(self, ref: str) -> str:
        out = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False).strip()
        if not out:
            raise ConfigError(f"git reference '{ref}' does not name a commit here",
                              value=ref, fix="fetch it (git fetch origin <ref>) or pass another --base/--head")
        return out

    def merge_base(self, a: str, b: str) -> str | None:
        out = self.run("merge-base", a, b, check=False).strip()
        return out or None

    def default_base(self, default_branch: str, head: str) -> str:
        """The merge-base of head with the default branch (origin's first, then local)."""
        for ref in (f"origin/{default_branch}", default_branch, "origin/HEAD"):
            if self.run("rev-parse", "--verify", "--quiet", ref, check=False).strip():
                base = self.merge_base(ref, head)
                if base and base != self.rev(head):
                    return base
        parent = self.run("rev-parse", "--verify", "--quiet", f"{head}~1", check=False).strip()
        if parent:
            return parent
        raise ConfigError("cannot find a base commit to compare with",
                          fix="pass --base REF (for example --base origin/main)")

    def changes(self, base: str, head: str) -> list[Change]:
        out = self.run("diff", "--name-status", "-M", "-z",
                       base, head)
        parts = out.split("\0")
        changes: list[Change] = []
        i = 0
        while i < len(parts) and parts[i]:
            code = parts[i]
            letter = code[0]
            if letter in ("R", "C"):
                old, new = parts[i + 1], parts[i + 2]
                changes.append(Change(_STATUS[letter], new, old))
                i += 3
            else:
                changes.append(Change(_STATUS.get(letter, "modified"), parts[i + 1]))
                i += 2
        return changes

    def files_at(self, ref: str) -> list[str]:
        return [p for p in self.run("ls-tree", "-r", "--name-only", "-z", ref).split("\0") if p]
