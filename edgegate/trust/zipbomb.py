"""Zip archives from a pull request (.pt / .pt2, .keras, .npz): their declared sizes are checked
before anything is inflated, so a few megabytes that unpack to gigabytes are refused up front.

A zip's central directory declares each member's compressed and uncompressed size; readers (zipfile,
numpy, PyTorch's miniz, Keras) allocate by, and stop at, the declared size. Model weights and
sample data barely compress (float data: about 1.1x), so a large member that claims a huge ratio
is a bomb, not a model.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from edgegate.errors import InputError, UnsafeInputError

MAX_MEMBERS = 100_000
MAX_RATIO = 200                  # uncompressed / compressed, for members over BOMB_MIN_BYTES
BOMB_MIN_BYTES = 64 << 20


def check_zip(path: Path, display: str, max_bytes: int) -> int:
    """Refuse an archive that unpacks to more than ``max_bytes`` or looks like a zip bomb.
    Returns the declared uncompressed total."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"cannot read the archive: {exc}", file=display,
                         fix="re-save the file; check that it is not truncated") from None
    if len(infos) > MAX_MEMBERS:
        raise UnsafeInputError(f"the archive holds {len(infos)} members, over the limit of "
                               f"{MAX_MEMBERS}", file=display, fix="re-save the file")
    total = 0
    for info in infos:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > BOMB_MIN_BYTES and ratio > MAX_RATIO:
            raise UnsafeInputError(
                f"zip bomb: member '{info.filename}' declares {info.file_size} bytes packed into "
                f"{info.compress_size} ({ratio:.0f}x; weights and data compress about 1-10x)",
                file=display, fix="re-save the file with the framework's own save function")
    if total > max_bytes:
        raise InputError(f"the archive unpacks to {total} bytes, over the {max_bytes}-byte limit",
                         file=display, fix="use a smaller model or fewer samples")
    return total
