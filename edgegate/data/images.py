"""A folder of images, with declared preprocessing, as an input array (and labels from class folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgegate._deps import require
from edgegate.config.schema import Preprocess
from edgegate.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
MAX_PIXELS = 64_000_000


def list_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Images in ``folder``. With one sub-folder per class, labels are the sorted class indices."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        files, labels = [], []
        for index, sub in enumerate(subdirs):
            for file in sorted(sub.iterdir()):
                if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                    files.append(file)
                    labels.append(index)
        return files, labels, [s.name for s in subdirs]
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    return files, None, []


def load_image(file: Path, pre: Preprocess, display: str) -> np.ndarray:
    image_mod = require("PIL.Image", extra="images")
    image_mod.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with image_mod.open(file) as img:
            img = img.convert("L" if pre.channel_order == "GRAY" else "RGB")
            if pre.resize:
                height, width = pre.resize
                img = img.resize((width, height), image_mod.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.float32)
    except Exception as exc:  # PIL raises many types for broken files
        raise InputError(f"cannot read image: {exc}", file=display,
                         fix="remove or replace the file") from None
    if array.ndim == 2:
        array = array[:, :, None]
    if pre.channel_order == "BGR":
        array = array[:, :, ::-1]
    array = array * pre.scale
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    array = (array - mean) / std
    if pre.layout == "NCHW":
        array = np.transpose(array, (2, 0, 1))
    return np.ascontiguousarray(array.astype(pre.dtype))


def load_image_folder(folder: Path, display: str, pre: Preprocess, indices: list[int] | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None, int]:
    files, labels, _ = list_images(folder)
    if not files:
        raise InputError("no images found in the folder", file=display,
                         fix=f"put images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) in it, "
                             "optionally one sub-folder per class")
    chosen = indices if indices is not None else list(range(len(files)))
    from edgegate.data.arrays import memory_budget_bytes

    budget = memory_budget_bytes()
    arrays = []
    for n, i in enumerate(chosen):
        arrays.append(load_image(files[i], pre, f"{display}/{files[i].relative_to(folder)}"))
        if n == 0 and arrays[0].nbytes * len(chosen) * 2 > budget:   # the list, then the stack
            raise InputError(f"{len(chosen):,} images of {arrays[0].nbytes:,} bytes each (after "
                             f"preprocessing) exceed the memory budget of {budget:,} bytes",
                             file=display, fix="use fewer images (samples:) or a smaller "
                                               "preprocess.resize")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images have different sizes after preprocessing: {sorted(shapes)[:3]}",
                         file=display, fix="set preprocess.resize: [height, width]")
    lab = np.asarray([labels[i] for i in chosen], dtype=np.int64) if labels is not None else None
    return np.stack(arrays), lab, len(files)
