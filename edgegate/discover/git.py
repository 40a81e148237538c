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


MISSING_COMMIT_FIX = ("set fetch-depth: 0 on actions/checkout (locally: git fetch --unshallow origin, "
                      "or git fetch origin <commit>), or pass a --base that is in this clone")

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
            if not self.is_repo():
                raise ConfigError("not inside a git repository, so there are no commits to compare",
                                  fix="run in your repository's checkout (new one: git init && git add "
                                      "-A && git commit -m first), or name the model files: "
                                      "edgegate run path/to/model.onnx")
            shallow = " (this clone is shallow)" if self.is_shallow() else ""
            raise ConfigError(f"git reference '{ref}' does not name a commit in this clone{shallow}",
                              fix=MISSING_COMMIT_FIX)
        return out

    def has_commit(self, ref: str) -> bool:
        return bool(self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}",
                             check=False).strip())

    def is_shallow(self) -> bool:
        return self.run("rev-parse", "--is-shallow-repository", check=False).strip() == "true"

    def fetch_commit(self, sha: str, remote: str = "origin") -> bool:
        """Fetch one commit (depth 1: its tree, enough to diff and to read files at it)."""
        self.run("fetch", "--no-tags", "--depth=1", remote, sha, check=False)
        return self.has_commit(sha)

    def deepen(self, commits: int | None, remote: str = "origin", refs: tuple[str, ...] = ()) -> bool:
        """Fetch more history of a shallow clone (``None``: all of it). False if fetch failed."""
        depth = f"--deepen={commits}" if commits else "--unshallow"
        out = subprocess.run(["git", "fetch", "--no-tags", depth, remote, *refs], cwd=self.root,
                             capture_output=True, text=True, timeout=600)
        return out.returncode == 0

    def merge_base(self, a: str, b: str) -> str | None:
        out = self.run("merge-base", a, b, check=False).strip()
        return out or None

    def default_base(self, default_branch: str, head: str) -> str | None:
        """The merge-base of head with the default branch (origin's first, then local), else
        head's parent; None when head is the first commit (every configured model is gated then).
        A shallow clone that lacks them is an error: its missing parent proves nothing."""
        for ref in (f"origin/{default_branch}", default_branch, "origin/HEAD"):
            if self.run("rev-parse", "--verify", "--quiet", ref, check=False).strip():
                base = self.merge_base(ref, head)
                if base and base != self.rev(head):
                    return base
        parent = self.run("rev-parse", "--verify", "--quiet", f"{head}~1", check=False).strip()
        if parent:
            return parent
        if self.is_shallow():
            raise ConfigError("this clone is shallow: no base commit to compare with",
                              fix=MISSING_COMMIT_FIX)
        return None

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

    def show(self, commit: str, path: str) -> str | None:
        """The text of ``path`` (relative to this client's folder) at ``commit``, or None."""
        spec = f"{commit}:./{path}"
        if self.run("cat-file", "-t", spec, check=False).strip() != "blob":
            return None
        return self.run("show", spec)

    def worktree_files(self) -> list[str]:
        """Tracked and untracked (not ignored) files of the working tree."""
        out = self.run("ls-files", "-z", "--cached", "--others", "--exclude-standard")
        return [p for p in out.split("\0") if p]

    def files_at(self, ref: str) -> list[str]:
        return [p for p in self.run("ls-tree", "-r", "--name-only", "-z", ref).split("\0") if p]
