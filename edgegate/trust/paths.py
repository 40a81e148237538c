"""The one path guard: every file EdgeGate reads from a pull request goes through ``safe_path``.

A path is resolved against the repository root with every symlink followed, and refused
(``UnsafeInputError``, naming the file and the field) if it lands outside the root or is anything
but a regular file or a folder (a FIFO, a socket, a device). The check uses ``os.stat`` only, so
a FIFO is refused without ever being opened (opening one blocks until a writer appears).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgegate.errors import UnsafeInputError

_FIX = "use a path inside the repository, without '..' or links out"
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind_of(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file or folder")


def safe_path(root: Path, raw: str | Path, *, what: str, field: str | None = None,
              source: str | None = None, line: int | None = None, display: str | None = None,
              tree: bool = False, _seen: set | None = None) -> Path:
    """``raw`` resolved (symlinks included) inside ``root``, refused if it leaves it or is not a
    regular file / folder. A path that does not exist is returned as is: the caller says "not
    found" in its own words. ``tree=True`` checks every entry under a folder too (a SavedModel's
    saved_model.pb and variables/, an image folder's images).

    ``source``/``line`` name the file that gave the path (edgegate.yml:12); without them the
    error names the path itself (``display``, or ``raw``)."""
    root_real = Path(root).resolve()
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = root_real / candidate
    real = candidate.resolve()
    name = display or str(raw)

    def refuse(problem: str, value: str) -> UnsafeInputError:
        return UnsafeInputError(f"the {what} {problem}", file=source or name, line=line,
                                field=field, value=value, fix=_FIX if "outside" in problem else
                                "commit a regular file (or folder) in its place")

    if real != root_real and root_real not in real.parents:
        raise refuse("leads outside the repository", name)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    except OSError as exc:                 # a loop of links, a name too long, no permission
        raise refuse(f"cannot be inspected ({exc.strerror})", name) from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise refuse(f"is {_kind_of(mode)}, not a regular file", name)
    if tree and stat.S_ISDIR(mode):
        seen = _seen if _seen is not None else set()
        if real in seen:                   # a link back to a folder already checked
            return real
        seen.add(real)
        for entry in sorted(os.listdir(real)):
            safe_path(root_real, real / entry, what=what, field=field, source=source, line=line,
                      display=f"{name.rstrip('/')}/{entry}", tree=True, _seen=seen)
    return real


def inside_workspace(root: Path, raw: str | Path, *, what: str, source: str | None = None,
                     line: int | None = None, field: str | None = None) -> Path:
    """The same guard (kept for its callers): ``safe_path`` without the folder walk."""
    return safe_path(root, raw, what=what, field=field, source=source, line=line)
