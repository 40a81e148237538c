"""Arrays from .npz / .npy files (never unpickled)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgegate.errors import InputError
from edgegate.zipbomb import check_zip

MAX_ARRAY_BYTES = 4 << 30   # refuse to materialise more than 4 GiB from one data file


def load_arrays(path: Path, display: str, single_name: str | None) -> dict[str, np.ndarray]:
    """Named arrays from .npz, or one array from .npy named ``single_name``."""
    if not path.is_file():
        raise InputError("data file not found", file=display,
                         fix="commit the file or correct the path in edgegate.yml")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            check_zip(path, display, MAX_ARRAY_BYTES)     # declared sizes: bombs refused
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        if suffix == ".npy":
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
