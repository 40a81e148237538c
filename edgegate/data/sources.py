"""Calibration and evaluation data for one model, validated against the model's inputs.

A calibration source is an iterable of ``{input_name: ndarray}`` (one sample, shaped for the
model); every target is calibrated on the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgegate.config.schema import CalibrationSpec, EvaluationSpec, ModelSpec, Preprocess
from edgegate.data.arrays import load_arrays, memory_budget_bytes
from edgegate.data.images import list_images, load_image_folder
from edgegate.trust.paths import safe_path
from edgegate.errors import ConfigError, InputError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple                 # ints for fixed dims, str/None for dynamic ones
    dtype: str                   # numpy dtype name

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass
class Dataset:
    inputs: dict[str, np.ndarray]            # name -> (N, *sample) arrays, already model dtypes
    labels: np.ndarray | None
    info: dict = field(default_factory=dict)
    squeeze: dict[str, bool] = field(default_factory=dict)   # input has no batch axis

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    def feed(self, i: int) -> dict[str, np.ndarray]:
        return {name: (np.asarray(arr[i]) if self.squeeze.get(name) else arr[i:i + 1])
                for name, arr in self.inputs.items()}

    def feeds(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.feed(i)

    def subset(self, indices: np.ndarray, **info) -> "Dataset":
        return Dataset({k: v[indices] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[indices],
                       {**self.info, **info}, dict(self.squeeze))


@dataclass
class ModelData:
    calibration: Dataset
    evaluation: Dataset
    warnings: list[str] = field(default_factory=list)


def _display(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _read(spec: CalibrationSpec | EvaluationSpec, inputs: list[TensorSpec], root: Path,
          role: str, labels_name: str | None, others: list[str] | None = None
          ) -> tuple[dict[str, np.ndarray], np.ndarray | None, str, int]:
    """``others`` (if given) receives the names of the file's arrays that are neither an input nor
    the labels: the did-you-mean of a labels array saved under another name."""
    assert spec.data is not None
    # the path guard: inside the repository, links followed; an image folder's every entry too
    path = safe_path(root, spec.data, what=f"{role} data path", field=f"{role}.data",
                     display=spec.data, tree=True)
    display = _display(root, path)
    if path.is_dir():
        target = spec.input or inputs[0].name
        if len(inputs) > 1 and not spec.input:
            raise ConfigError(f"the model has {len(inputs)} inputs; an image folder feeds one",
                              field=f"{role}.input", fix=f"set '{role}.input' to one of "
                              + ", ".join(i.name for i in inputs))
        array, labels, _ = load_image_folder(path, display, spec.preprocess or Preprocess())
        return {target: array}, labels, display, len(array)
    arrays = load_arrays(path, display, spec.input or (inputs[0].name if len(inputs) == 1 else None))
    labels = None
    if labels_name and labels_name in arrays:
        labels = arrays.pop(labels_name)
    missing = [i.name for i in inputs if i.name not in arrays]
    if missing and len(inputs) == 1 and len(arrays) == 1:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
        missing = []
    if missing:
        raise InputError(f"no array named {', '.join(repr(m) for m in missing)} "
                         f"(found {', '.join(repr(a) for a in arrays) or 'none'})", file=display,
                         fix="name the arrays after the model's inputs: "
                             + ", ".join(i.name for i in inputs))
    counts = {len(arrays[i.name]) for i in inputs}
    if labels is not None:
        counts.add(len(labels))
    if len(counts) != 1:
        raise InputError(f"arrays have different sample counts {sorted(counts)}", file=display,
                         fix="give every array (and the labels) the same first dimension")
    if others is not None:
        others.extend(a for a in arrays if a not in {i.name for i in inputs})
    return {i.name: arrays[i.name] for i in inputs}, labels, display, counts.pop()


_CASTS = {"f": "fiub", "i": "iub", "u": "ub", "b": "b"}


def _conform(arrays: dict[str, np.ndarray], inputs: list[TensorSpec], display: str
             ) -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    out, squeeze = {}, {}
    for spec in inputs:
        arr = arrays[spec.name]
        want = np.dtype(spec.dtype)
        if arr.dtype != want:
            if arr.dtype.kind not in _CASTS.get(want.kind, ""):
                raise InputError(f"array '{spec.name}' is {arr.dtype}, the model wants {want}",
                                 file=display, fix=f"save it as {want}")
            arr = arr.astype(want)
        rank = len(spec.shape)
        if rank and arr.ndim == rank:
            # the data's first axis is the model's batch axis: feed arr[i:i+1]
            squeeze[spec.name] = False
            model_dims, sample_dims = spec.shape[1:], arr.shape[1:]
            batch = spec.shape[0]
            if isinstance(batch, int) and batch > 1:
                raise InputError(f"the model's input '{spec.name}' has a fixed batch of {batch}; "
                                 "EdgeGate feeds one sample at a time", file=display,
                                 fix="export the model with batch 1 or a dynamic batch axis")
        elif arr.ndim == rank + 1:
            # the model has no batch axis: feed arr[i]
            squeeze[spec.name] = True
            model_dims, sample_dims = spec.shape, arr.shape[1:]
        else:
            raise InputError(f"array '{spec.name}' has shape {list(arr.shape)}; the model's input "
                             f"is {list(spec.shape)}", file=display,
                             fix="stack samples on the first axis: (samples, " +
                                 ", ".join(str(d) for d in spec.shape[1:]) + ")")
        for want_dim, got in zip(model_dims, sample_dims):
            if isinstance(want_dim, int) and want_dim > 0 and want_dim != got:
                raise InputError(f"array '{spec.name}' has samples of shape {list(arr.shape[1:])}; "
                                 f"the model's input is {list(spec.shape)}", file=display,
                                 fix="resize the data to the model's input shape")
        out[spec.name] = np.ascontiguousarray(arr)
    return out, squeeze


def _synthetic_shape(spec: TensorSpec, n: int) -> list[int]:
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
    return [n] + shape[1:] if shape else [n]


def _synthetic(inputs: list[TensorSpec], n: int, seed: int) -> dict[str, np.ndarray]:
    budget = memory_budget_bytes()
    # float64 draws, then the model's dtype: count both before anything is allocated
    wanted = sum(int(np.prod(_synthetic_shape(s, n), dtype=object))
                 * (8 + np.dtype(s.dtype).itemsize) for s in inputs)
    if wanted > budget:
        per_sample = max(1, wanted // n)
        raise ConfigError(f"{n:,} synthetic samples need {wanted:,} bytes, over the memory budget "
                          f"of {budget:,} bytes", field="calibration.samples", value=n,
                          fix=f"ask for at most {budget // per_sample:,} samples "
                              "(a few hundred calibrate well)")
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        shape = _synthetic_shape(spec, n)
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            out[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            out[spec.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[spec.name] = rng.integers(0, 10, shape).astype(dtype)
    return out


def prepare_data(spec: ModelSpec, inputs: list[TensorSpec], root: Path) -> ModelData:
    """Build the calibration and evaluation sets for one model, with what was used recorded."""
    calib = spec.calibration_spec()
    evaluation = spec.evaluation
    warnings: list[str] = []
    eval_ds: Dataset | None = None

    if evaluation is not None and evaluation.data:
        labels_name = evaluation.labels if evaluation.metric != "fidelity" else None
        others: list[str] = []
        arrays, labels, display, total = _read(evaluation, inputs, root, "evaluation", labels_name,
                                               others)
        if evaluation.metric in ("top1", "top5", "mse") and labels is None:
            hint = (f"set evaluation.labels: {others[0]} (the file's other array"
                    f"{'s: ' + ', '.join(others) if len(others) > 1 else ''}), "
                    if others else "set evaluation.labels to the labels array's name, ")
            raise InputError(f"metric '{evaluation.metric}' needs labels, but there is no "
                             f"'{evaluation.labels}' array", file=display,
                             field="evaluation.labels",
                             fix=hint + "add a 'labels' array, or use metric: fidelity (no labels)")
        if labels is not None:
            _check_labels(labels, evaluation.metric, evaluation.labels, display)
        arrays, squeeze = _conform(arrays, inputs, display)
        eval_ds = Dataset(arrays, labels, {"source": "file", "path": display, "total": total,
                                           "seed": evaluation.seed, "metric": evaluation.metric},
                          squeeze)

    if calib is not None and calib.synthetic:
        n = calib.samples or 100
        arrays = _synthetic(inputs, n, calib.seed)
        calib_ds = Dataset(arrays, None, {"source": "synthetic", "path": None, "total": n,
                                          "seed": calib.seed, "method": calib.method})
        calib_ds.squeeze = {i.name: False for i in inputs}
        warnings.append("calibrated on synthetic random data (synthetic: true, or --synthetic): the "
                        "quantization ranges do not reflect real inputs, so accuracy numbers mean little")
    elif calib is not None and calib.data:
        arrays, _, display, total = _read(calib, inputs, root, "calibration", None)
        arrays, squeeze = _conform(arrays, inputs, display)
        calib_ds = Dataset(arrays, None, {"source": "file", "path": display, "total": total,
                                          "seed": calib.seed, "method": calib.method}, squeeze)
    elif eval_ds is not None:
        n_eval = len(eval_ds)
        want = (calib.samples if calib else None) or 200
        n_cal = min(want, n_eval // 2)
        if n_cal < 1:
            raise InputError("the evaluation set is too small to draw calibration samples from",
                             file=eval_ds.info["path"], fix="add a calibration file")
        order = np.random.default_rng(calib.seed if calib else 0).permutation(n_eval)
        method = calib.method if calib else "minmax"
        calib_ds = eval_ds.subset(order[:n_cal], source="evaluation-split", method=method,
                                  note=f"{n_cal} samples drawn from the evaluation set; "
                                       "those samples are not evaluated")
        eval_ds = eval_ds.subset(np.sort(order[n_cal:]), note=f"{n_cal} samples held out for calibration")
        warnings.append(f"no calibration data given: {n_cal} calibration samples were drawn from "
                        f"{eval_ds.info['path']} and left out of the evaluation")
    else:
        raise ConfigError("the model has no calibration data", field="calibration",
                          fix="set 'calibration: data/calibration.npz' (arrays named after the "
                              "inputs) or an 'evaluation' set to draw from; 'calibration: "
                              "{synthetic: true}' calibrates on random data (on the command line: "
                              "--calibration FILE, --evaluation FILE or --synthetic)")

    calib_ds = _sample(calib_ds, calib.samples if calib else None,
                       calib.seed if calib else 0)
    if eval_ds is None:
        eval_ds = calib_ds
        eval_ds = Dataset(dict(calib_ds.inputs), None,
                          {**calib_ds.info, "metric": "fidelity",
                           "note": "no evaluation set: fidelity is measured on the calibration "
                                   "samples (optimistic)"}, dict(calib_ds.squeeze))
        warnings.append("no evaluation data: accuracy is not measured; fidelity is measured on "
                        "the calibration samples, which is optimistic")
    elif evaluation is not None:
        eval_ds = _sample(eval_ds, evaluation.samples, evaluation.seed)
    return ModelData(calib_ds, eval_ds, warnings)


def _check_labels(labels: np.ndarray, metric: str, name: str | None, display: str) -> None:
    """top1/top5 compare class indices, mse numbers: strings, objects or fractional 'classes'
    are bad data, named with their dtype (not a crash in int('cat'))."""
    if metric in ("top1", "top5"):
        integral = labels.dtype.kind in "iub" or (
            labels.dtype.kind == "f" and bool(np.all(np.isfinite(labels)))
            and bool(np.all(labels == np.round(labels))))
        if not integral:
            raise InputError(f"labels array '{name}' is {labels.dtype}; metric '{metric}' needs "
                             "integer class indices", file=display, field="evaluation.labels",
                             value=str(labels.dtype),
                             fix="save the labels as integers (0..classes-1), e.g. "
                                 "np.unique(names, return_inverse=True)[1]")
    elif metric == "mse" and labels.dtype.kind not in "iubf":
        raise InputError(f"labels array '{name}' is {labels.dtype}; metric 'mse' needs numbers",
                         file=display, field="evaluation.labels", value=str(labels.dtype),
                         fix="save the targets as a float array")


def _sample(ds: Dataset, samples: int | None, seed: int) -> Dataset:
    n = len(ds)
    if samples is None or samples >= n:
        return Dataset(ds.inputs, ds.labels, {**ds.info, "samples": n, "seed": seed}, ds.squeeze)
    idx = np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))
    return ds.subset(idx, samples=samples, seed=seed)
