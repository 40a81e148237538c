"""Framework detection by content and suffix, and Git LFS pointers."""

from __future__ import annotations

from pathlib import Path

from edgegate.errors import InputError

LFS_SIGNATURE = b"version https://git-lfs.github.com/spec/"

SUFFIXES = {
    ".onnx": "onnx",
    ".pt": "pytorch", ".pth": "pytorch", ".pt2": "pytorch", ".ptl": "pytorch", ".bin": "pytorch",
    ".keras": "tensorflow", ".h5": "tensorflow", ".hdf5": "tensorflow",
}

MODEL_SUFFIXES = tuple(SUFFIXES)


def is_lfs_pointer(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size > 1024:
        return False
    with path.open("rb") as fh:
        return fh.read(len(LFS_SIGNATURE)) == LFS_SIGNATURE


def check_not_lfs_pointer(path: Path, display: str) -> None:
    if is_lfs_pointer(path):
        raise InputError("this is a Git LFS pointer, not the model: the LFS object was not fetched",
                         file=display,
                         fix="fetch LFS objects before the gate runs (actions/checkout with "
                             "'lfs: true', or 'git lfs pull')")


def detect_framework(path: Path, display: str, declared: str | None = None) -> str:
    if declared:
        return declared
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "tensorflow"
        raise InputError("a folder that is not a TensorFlow SavedModel (no saved_model.pb)",
                         file=display, fix="point 'path' at a model file or a SavedModel folder")
    framework = SUFFIXES.get(path.suffix.lower())
    if framework is None:
        raise InputError(f"cannot tell the framework of a '{path.suffix}' file", file=display,
                         fix="use .onnx, .pt/.pt2 (PyTorch), .keras/.h5 or a SavedModel folder, "
                             "or set 'framework' in edgegate.yml")
    return framework
