"""One evaluator for every target: labelled accuracy (and its metrics). Label-free fidelity
against the source is stages/fidelity.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgegate.data.sources import Dataset
from edgegate.errors import ConfigError, InputError


def collect_outputs(infer: Callable[[dict], list], dataset: Dataset, display: str = ""
                    ) -> list[list[np.ndarray]]:
    """Run every sample; return, per model output, the list of per-sample arrays."""
    per_output: list[list[np.ndarray]] = []
    for i in range(len(dataset)):
        feed = dataset.feed(i)
        try:
            outs = infer(feed)
        except Exception as exc:
            raise InputError(f"inference failed on evaluation sample {i}: {type(exc).__name__}: "
                             f"{str(exc)[:300]}", file=display,
                             fix="check that the data matches the model's inputs") from None
        if not per_output:
            per_output = [[] for _ in outs]
        for slot, out in zip(per_output, outs):
            slot.append(np.asarray(out))
    return per_output


def stacked(samples: list[np.ndarray], ragged: str = "raise") -> np.ndarray:
    """Per-sample outputs as one (samples, ...) array, dropping a batch axis of 1. Shapes that
    differ per sample raise (a metric cannot read them), or with ``ragged="flatten"`` are
    flattened and concatenated (noise sums over them still hold)."""
    if all(s.ndim and s.shape[0] == 1 for s in samples):
        samples = [s[0] for s in samples]
    try:
        return np.stack(samples)
    except ValueError:
        if ragged == "flatten":
            return np.concatenate([np.ravel(s) for s in samples])
        raise InputError("the metric's output has a different shape for each sample",
                         fix="use metric: fidelity, or a custom module:function metric") from None


def _scores(out: np.ndarray) -> np.ndarray:
    return out.reshape(out.shape[0], -1).astype(np.float64)


def topk(out: np.ndarray, labels: np.ndarray, k: int) -> float:
    scores = _scores(out)
    labels = labels.reshape(-1).astype(np.int64)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)) * 100.0)


def mse(out: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean((_scores(out) - labels.reshape(len(labels), -1).astype(np.float64)) ** 2))


def custom_metric(ref: str, root: Path) -> Callable[[np.ndarray, np.ndarray], float]:
    """``module:function`` from a Python file in the repository (configuration-declared code);
    anything else (a standard-library or installed module) is refused before it is imported."""
    from edgegate.trust.repo_code import import_reference

    return import_reference(ref, root, field="evaluation.metric")


def score(metric: str, out: np.ndarray, labels: np.ndarray | None, root: Path | None = None) -> float | None:
    if labels is None or metric == "fidelity":
        return None
    if metric == "top1":
        return topk(out, labels, 1)
    if metric == "top5":
        return topk(out, labels, 5)
    if metric == "mse":
        return mse(out, labels)
    return float(custom_metric(metric, root or Path.cwd())(out, labels))


def pick_output(outputs: list, which: int | str, names: list[str], display: str) -> list:
    if isinstance(which, int):
        if which >= len(outputs):
            raise ConfigError(f"evaluation.output is {which} but the model has {len(outputs)} outputs",
                              field="evaluation.output", fix=f"use 0..{len(outputs) - 1}")
        return outputs[which]
    if which not in names:
        raise ConfigError(f"the model has no output named '{which}'", field="evaluation.output",
                          fix="use one of " + ", ".join(names))
    return outputs[names.index(which)]
