"""Arrays from .npz / .npy files (never unpickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgegate.errors import InputError
from edgegate.trust.zipbomb import check_zip

MAX_ARRAY_BYTES = 4 << 30   # refuse to materialise more than 4 GiB from one data file


def memory_budget_bytes() -> int:
    """The most one data set may allocate: 4 GiB, or less on a machine whose default memory
    limit (isolation.default_memory_limit_mb: 75% of RAM) is smaller."""
    from edgegate.trust.isolation import default_memory_limit_mb

    return min(MAX_ARRAY_BYTES, default_memory_limit_mb() << 20)


def declared_bytes(fh, member: str, display: str) -> int:
    """The bytes a .npy stream's header declares (shape x itemsize), read before any allocation;
    0 for object arrays (np.load refuses those itself: no unpickling)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        else:                       # 2.0, and 3.0 (the same layout, utf-8 field names)
            shape, _, dtype = fmt.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"'{member}' has no valid .npy header ({exc})", file=display,
                         fix="write the file with numpy.savez / numpy.save") from None
    if dtype.hasobject:
        return 0
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def check_declared(path: Path, display: str, suffix: str) -> None:
    """Refuse a data file whose arrays declare more than the memory budget (a 2 PiB header in a
    few bytes), naming the array, before numpy allocates anything."""
    budget = memory_budget_bytes()
    if suffix == ".npz":
        with zipfile.ZipFile(path) as zf:
            sizes = {}
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as fh:
                        sizes[info.filename[:-4]] = declared_bytes(fh, info.filename, display)
    else:
        with path.open("rb") as fh:
            sizes = {path.name: declared_bytes(fh, path.name, display)}
    total = sum(sizes.values())
    if total > budget:
        name, biggest = max(sizes.items(), key=lambda kv: kv[1])
        raise InputError(f"the arrays declare {total:,} bytes (array '{name}': {biggest:,}), over "
                         f"the memory budget of {budget:,} bytes", file=display,
                         fix="use fewer or smaller samples; a header that declares more than the "
                             "file holds is a corrupt or hostile file")


def load_arrays(path: Path, display: str, single_name: str | None) -> dict[str, np.ndarray]:
    """Named arrays from .npz, or one array from .npy named ``single_name``."""
    if not path.is_file():
        raise InputError("data file not found", file=display,
                         fix="commit the file or correct the path in edgegate.yml")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            check_zip(path, display, MAX_ARRAY_BYTES)     # declared sizes: bombs refused
            check_declared(path, display, suffix)         # .npy headers: shapes x dtypes
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        if suffix == ".npy":
            check_declared(path, display, suffix)
            array = np.load(path, allow_pickle=False, mmap_mode="r")
            return {single_name or "input": np.asarray(array)}
    except InputError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "python objects" in str(exc).lower():
            raise InputError("the data file holds Python objects, which would need unpickling",
                             file=display, fix="save plain numeric arrays (np.savez)") from None
        raise InputError(f"cannot read the data file: {exc}", file=display,
                         fix="write it with numpy.savez / numpy.save") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read the data file: {exc}", file=display,
                         fix="write it with numpy.savez / numpy.save") from None
    raise InputError(f"unsupported data file type '{suffix}'", file=display,
                     fix="use .npz (arrays named after the model inputs), .npy, or a folder of images")
