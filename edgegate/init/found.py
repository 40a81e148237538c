"""What `edgegate init` finds in a repository: model files (the suffixes discovery gates), their
inputs (ONNX: the graph's inputs; other formats: what the configuration must say), and data files
whose arrays fit those inputs. Nothing is imported but onnx and numpy; nothing is unpickled."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgegate.data.sources import TensorSpec
from edgegate.discover.detect import MODEL_SUFFIXES, SUFFIXES, is_lfs_pointer
from edgegate.discover.git import Git

DATA_SUFFIXES = (".npz", ".npy")
LABEL_NAMES = ("labels", "label", "y", "targets", "target")
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}
MAX_ONNX_BYTES = 2 << 30          # larger models: inputs left for the user to fill in


@dataclass(frozen=True)
class FoundModel:
    path: str                              # relative to the root, POSIX separators
    framework: str                         # onnx | pytorch | tensorflow
    kind: str                              # onnx | torchscript | exported-program | checkpoint |
                                           # keras | saved-model | unreadable
    inputs: list[TensorSpec] | None = None  # known for ONNX
    note: str | None = None                # why the inputs are unknown


@dataclass(frozen=True)
class DataFile:
    path: str
    arrays: dict[str, tuple[tuple[int, ...], str]]    # name -> (shape, dtype)


@dataclass(frozen=True)
class DataChoice:
    """The data files chosen for one model (None: not found)."""

    calibration: str | None = None
    calibration_what: str = ""
    evaluation: str | None = None
    evaluation_what: str = ""
    labels: str | None = None
    metric: str | None = None
    checked: bool = True                   # the arrays were checked against the model's inputs
    others: list[str] = field(default_factory=list)


def _skipped_dir(name: str) -> bool:
    return name.startswith(".") or name in SKIP_DIRS


def repo_files(root: Path, git: Git | None) -> list[str]:
    """Files under root (relative, POSIX): git's tracked and untracked-but-not-ignored files in a
    repository, else a walk that skips hidden folders, virtualenvs and node_modules. Hidden
    folders (the run outputs in .edgegate-out/ among them) are never searched."""
    if git is not None and git.is_repo():
        paths = git.worktree_files()
        return sorted(p for p in paths if not any(_skipped_dir(part) for part in p.split("/")[:-1])
                      and (root / p).is_file())
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d)
                         and not (Path(folder) / d / "pyvenv.cfg").is_file())
        for name in names:
            files.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(files)


def find_models(root: Path, files: list[str]) -> list[FoundModel]:
    saved_models = sorted({p.rsplit("/", 1)[0] for p in files
                           if p.endswith("/saved_model.pb")})
    out = [FoundModel(d, "tensorflow", "saved-model",
                      note="TensorFlow SavedModel: the inputs are read from its signature")
           for d in saved_models]
    for path in files:
        suffix = Path(path).suffix.lower()
        if suffix not in MODEL_SUFFIXES or any(path.startswith(d + "/") for d in saved_models):
            continue
        found = _model(root, path, SUFFIXES[suffix])
        if found is not None:
            out.append(found)
    return sorted(out, key=lambda m: m.path)


def _model(root: Path, path: str, framework: str) -> FoundModel | None:
    full = root / path
    if is_lfs_pointer(full):
        return FoundModel(path, framework, "unreadable",
                          note="a Git LFS pointer, not the model (run 'git lfs pull')")
    if framework == "onnx":
        return _onnx(full, path)
    if framework == "tensorflow":
        return FoundModel(path, framework, "keras",
                          note="Keras file: the inputs are read from the model when it loads")
    from edgegate.errors import EdgeGateError
    from edgegate.frontends import torch_archive

    try:
        kind = torch_archive.inspect(full, path).kind
    except EdgeGateError as exc:
        if Path(path).suffix.lower() == ".bin":
            return None                    # a .bin that is not a PyTorch file: not a model
        return FoundModel(path, framework, "unreadable", note=exc.what)
    notes = {torch_archive.EXPORTED_PROGRAM: "torch.export program: the inputs are read from it",
             torch_archive.TORCHSCRIPT: "TorchScript: the file does not carry its input shapes",
             torch_archive.CHECKPOINT: "torch.save checkpoint: EdgeGate needs the code that builds "
                                       "the module and the input shapes"}
    return FoundModel(path, framework, kind, note=notes.get(kind))


def _onnx(full: Path, path: str) -> FoundModel:
    import onnx

    from edgegate.stages.analyze import io_specs

    if full.stat().st_size > MAX_ONNX_BYTES:
        return FoundModel(path, "onnx", "unreadable",
                          note=f"over {MAX_ONNX_BYTES >> 30} GiB: inputs not read")
    try:
        model = onnx.load(str(full), load_external_data=False)
    except Exception as exc:                # a corrupt file: say so, write the entry anyway
        return FoundModel(path, "onnx", "unreadable",
                          note=f"not a readable ONNX model ({type(exc).__name__})")
    inputs, _ = io_specs(model)
    return FoundModel(path, "onnx", "onnx", inputs=inputs)


# ------------------------------------------------------------------ data files


def read_data_files(root: Path, files: list[str]) -> list[DataFile]:
    """Array names, shapes and dtypes of every .npz/.npy, read from the headers only."""
    out = []
    for path in files:
        if Path(path).suffix.lower() not in DATA_SUFFIXES:
            continue
        arrays = _headers(root / path)
        if arrays:
            out.append(DataFile(path, arrays))
    return out


def _header(fh) -> tuple[tuple[int, ...], str]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject:
        raise ValueError("object arrays")
    return tuple(int(d) for d in shape), dtype.name


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]] | None:
    try:
        if path.suffix.lower() == ".npy":
            with path.open("rb") as fh:
                return {"": _header(fh)}
        with zipfile.ZipFile(path) as zf:
            out = {}
            for member in zf.namelist():
                if member.endswith(".npy"):
                    with zf.open(member) as fh:
                        out[member[:-4]] = _header(fh)
            return out or None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def _fits(shape: tuple[int, ...], spec: TensorSpec) -> bool:
    rank = len(spec.shape)
    if len(shape) == rank and rank:
        model_dims, sample_dims = spec.shape[1:], shape[1:]
    elif len(shape) == rank + 1:
        model_dims, sample_dims = spec.shape, shape[1:]
    else:
        return False
    return all(not (isinstance(w, int) and w > 0) or w == g for w, g in zip(model_dims, sample_dims))


def _binding(data: DataFile, inputs: list[TensorSpec], labels: str | None
             ) -> dict[str, str] | None:
    """input name -> array name, when the file feeds every input the way data/sources.py reads it."""
    arrays = {n: v for n, v in data.arrays.items() if n != labels}
    if all(i.name in arrays for i in inputs):
        binding = {i.name: i.name for i in inputs}
    elif len(inputs) == 1 and len(arrays) == 1:
        binding = {inputs[0].name: next(iter(arrays))}
    else:
        return None
    if not all(_fits(arrays[binding[i.name]][0], i) for i in inputs):
        return None
    counts = {arrays[a][0][0] for a in binding.values() if arrays[a][0]}
    if labels is not None and data.arrays[labels][0]:
        counts.add(data.arrays[labels][0][0])
    return binding if len(counts) == 1 else None


def _role_words(path: str) -> str:
    stem = Path(path).stem.lower()
    if "calib" in stem:
        return "calibration"
    if any(w in stem for w in ("eval", "test", "valid", "val_", "_val", "holdout")) or stem == "val":
        return "evaluation"
    return ""


def _samples(data: DataFile, binding: dict[str, str]) -> int:
    shape = data.arrays[next(iter(binding.values()))][0]
    return shape[0] if shape else 1


def choose_data(model: FoundModel, data_files: list[DataFile]) -> DataChoice:
    """The calibration and evaluation files for ``model``: files whose arrays fit its inputs (ONNX),
    preferring names that mention the model and say their role."""
    stem = Path(model.path).stem.lower()
    calib: list[tuple[int, DataFile, str]] = []
    evals: list[tuple[int, DataFile, str | None, str]] = []
    for data in data_files:
        role = _role_words(data.path)
        score = (2 if stem and stem in data.path.lower() else 0) + (1 if role else 0)
        label = next((n for n in LABEL_NAMES if n in data.arrays), None)
        if model.inputs is None:
            # formats whose inputs init cannot read: only files that name their role
            if role == "calibration":
                calib.append((score, data, "not checked against the model's inputs"))
            elif role == "evaluation":
                evals.append((score, data, label, "not checked against the model's inputs"))
            continue
        if role != "calibration" and label is not None:
            binding = _binding(data, model.inputs, label)
            if binding:
                evals.append((score, data, label, _what(data, binding, label)))
                continue
        if role != "evaluation":
            binding = _binding(data, model.inputs, None)
            if binding:
                calib.append((score, data, _what(data, binding, None)))
        if role == "evaluation" and label is None:
            binding = _binding(data, model.inputs, None)
            if binding:
                evals.append((score, data, None, _what(data, binding, None)))
    calib.sort(key=lambda c: (-c[0], c[1].path))
    evals.sort(key=lambda e: (-e[0], e[1].path))
    choice = DataChoice(checked=model.inputs is not None)
    if evals:
        _, data, label, what = evals[0]
        choice = replace(choice, evaluation=data.path, evaluation_what=what, labels=label,
                         metric=_metric(data, label))
    if calib:
        _, data, what = calib[0]
        choice = replace(choice, calibration=data.path, calibration_what=what)
    used = {choice.calibration, choice.evaluation}
    return replace(choice, others=sorted(({c[1].path for c in calib} | {e[1].path for e in evals})
                                         - used))


def _what(data: DataFile, binding: dict[str, str], label: str | None) -> str:
    names = ", ".join(a or "(the array)" for a in binding.values())
    return f"{names}{' + ' + label if label else ''}, {_samples(data, binding)} samples"


def _metric(data: DataFile, label: str | None) -> str:
    if label is None:
        return "fidelity"
    shape, dtype = data.arrays[label]
    kind = np.dtype(dtype).kind
    if kind in "iub" and len(shape) == 1:
        return "top1"
    return "mse" if kind == "f" else "fidelity"
