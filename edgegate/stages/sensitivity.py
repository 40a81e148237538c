"""Per-layer sensitivity: how much each compute node, quantized on its own, moves the output.

The quality of a candidate model is measured against the FP32 model on the evaluation data: the
labelled accuracy drop when labels exist, and always the task fidelity the gate checks
(stages/fidelity.py: top-1 agreement, mask IoU, box F1, cosine or worst-channel SQNR, by the
model's task), so the search holds the same numbers the policy will judge. The layer blame table
quantizes one compute node at a time (everything else in float, the calibration shared through
the cache) and ranks nodes by the output noise they cause alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgegate.config.policy_schema import FIDELITY_LIMITS, LIMITS
from edgegate.data.sources import Dataset
from edgegate.stages.evaluate import collect_outputs, stacked
from edgegate.stages.fidelity import TaskInfo, task_fidelity

BATCH = 64
# the budgets that are a fidelity metric the artifact must reach (higher is better)
AT_LEAST = {"sqnr_db", "box_f1", "cosine_similarity", "mask_iou"}
# the built-in profiles' defaults (policies/*.yml), used when no policy limit reaches the search
DEFAULTS = {"box_f1": 0.95, "cosine_similarity": 0.99, "mask_iou": 0.9}


@dataclass(frozen=True)
class Budget:
    """What "within budget" means for this device: which quality number, its limit, who set it."""

    kind: str            # accuracy_drop_pp | disagreement_pp | sqnr_db | box_f1 | cosine_similarity | mask_iou
    value: float
    source: str          # policy file:line, or why a default was used
    also: tuple["Budget", ...] = ()   # further limits a candidate must meet (e.g. agreement)

    def met(self, quality: "Quality") -> bool | None:
        own = self._met_own(quality)
        others = [b.met(quality) for b in self.also]
        if own is False or False in others:
            return False
        return own

    def _met_own(self, quality: "Quality") -> bool | None:
        got = quality.get(self.kind)
        if self.kind in AT_LEAST:
            return None if got is None else bool(got >= self.value - 1e-9)
        return None if got is None else bool(got <= self.value + 1e-9)

    def shortfall(self, quality: "Quality") -> float | None:
        """How far the candidate is from this budget, in the budget's own unit (<= 0: met);
        inf values keep their direction (an identical output's inf SQNR: -inf, met; an inf
        accuracy drop: +inf), NaN is +inf (never met)."""
        got = quality.get(self.kind)
        if got is None:
            return None
        if np.isnan(got):
            return float("inf")
        return float(self.value - got if self.kind in AT_LEAST else got - self.value)

    def metrics(self) -> set[str]:
        """The fidelity metrics (task_fidelity keys) this budget and its ``also`` read."""
        own = {"disagreement_pp": "top1_agreement"}.get(self.kind, self.kind)
        return ({own} - {"accuracy_drop_pp"}).union(*(b.metrics() for b in self.also))

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "value": self.value, "source": self.source}
        if self.also:
            out["also"] = [b.to_dict() for b in self.also]
        return out


@dataclass(frozen=True)
class Quality:
    accuracy: float | None
    accuracy_drop_pp: float | None
    top1_agreement: float | None
    sqnr_db: float | None        # the task's SQNR: worst channel when the task is known
    noise_ratio: float           # output noise power / signal power (0: identical)
    box_f1: float | None = None
    cosine_similarity: float | None = None
    mask_iou: float | None = None

    @property
    def disagreement_pp(self) -> float | None:
        return None if self.top1_agreement is None else (1.0 - self.top1_agreement) * 100.0

    def get(self, kind: str) -> float | None:
        return getattr(self, kind)

    def to_dict(self) -> dict:
        return {"accuracy": _r(self.accuracy), "accuracy_drop_pp": _r(self.accuracy_drop_pp),
                "top1_agreement": _r(self.top1_agreement, 4), "disagreement_pp": _r(self.disagreement_pp),
                "sqnr_db": _r(self.sqnr_db), "box_f1": _r(self.box_f1, 4),
                "cosine_similarity": _r(self.cosine_similarity, 5), "mask_iou": _r(self.mask_iou, 4)}


def _r(value: float | None, digits: int = 3) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


def run_outputs(infer: Callable[[dict], list], data: Dataset, batchable: bool) -> list[list[np.ndarray]]:
    """Every output of every sample, ``out[k][i]`` shaped as a batch of one, the way the gate
    collects them. Run in batches when every output then has one row per sample; otherwise (a
    fixed batch axis, a state output batched on another axis) one sample at a time."""
    n = len(data)
    if batchable and n > 1 and not any(data.squeeze.values()):
        try:
            parts = [infer({k: v[i:i + BATCH] for k, v in data.inputs.items()})
                     for i in range(0, n, BATCH)]
            outs = [np.concatenate([np.asarray(p[k]) for p in parts], axis=0) for k in range(len(parts[0]))]
            if all(o.ndim and len(o) == n for o in outs):
                return [[o[i:i + 1] for i in range(n)] for o in outs]
        except Exception:
            pass    # a fixed batch axis: fall back to one sample at a time
    return collect_outputs(infer, data)


def _stack(samples: list[np.ndarray]) -> np.ndarray:
    """One output's samples as one (samples, ...) array; per-sample shapes that differ (dynamic)
    are flattened and concatenated."""
    return stacked(samples, ragged="flatten")


class Scorer:
    """Scores candidate models against the FP32 model on (a subset of) the evaluation data."""

    def __init__(self, fp32_path: Path, data: Dataset, make_runner: Callable[[Path], object],
                 max_samples: int | None = None, task: TaskInfo | None = None,
                 output: int = 0):
        """``task``: the model's task as the gate inferred it (None: output ``output`` is read
        as class scores when it is one vector per sample, else by its SQNR)."""
        if max_samples and len(data) > max_samples:
            data = data.subset(np.arange(max_samples))
        self.data = data
        self.make_runner = make_runner
        self.batchable = True
        self.task = task
        self.output = output
        self.metric = data.info.get("metric", "top1")
        self.labels = data.labels if self.metric in ("top1", "top5") else None
        self.reference_outputs = self.outputs(fp32_path)
        self.reference = _stack(self.reference_outputs[output]).astype(np.float64)
        vector = self.reference.ndim == 2 and self.reference.shape[1] > 1
        self.vector = vector
        self.primary = task.primary if task is not None else ("top1_agreement" if vector else "sqnr_db")
        self.classes = self.primary == "top1_agreement"
        self.accuracy_fp32 = self._accuracy(self.reference)

    def outputs(self, path: Path) -> list[list[np.ndarray]]:
        runner = self.make_runner(path)
        return run_outputs(runner.infer, self.data, self.batchable)

    def _accuracy(self, out: np.ndarray) -> float | None:
        if self.labels is None or not self.vector:
            return None
        labels = self.labels.reshape(-1)
        k = 5 if self.metric == "top5" else 1
        top = np.argsort(-out, axis=1)[:, :k]
        return float(np.mean(np.any(top == labels[:, None], axis=1)) * 100.0)

    def score(self, path: Path, only: set[str] | None = None) -> Quality:
        """The candidate's quality; ``only``: the fidelity metrics to compute (the primary is
        always among them), the others left None (the layer blame: no NMS, cosine, ... it
        does not read)."""
        outs = self.outputs(path)
        out = _stack(outs[self.output]).astype(np.float64)
        ref = self.reference
        if out.shape != ref.shape:
            ratio, sqnr = float("inf"), None
        else:
            noise = float(np.sum((out - ref) ** 2))
            signal = float(np.sum(ref ** 2))
            ratio = noise / signal if signal > 0 else (0.0 if noise == 0 else float("inf"))
            sqnr = float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else None)
        acc = self._accuracy(out) if out.shape == ref.shape else None
        drop = None if acc is None or self.accuracy_fp32 is None else self.accuracy_fp32 - acc
        if self.task is None:
            agree = float(np.mean(out.argmax(1) == ref.argmax(1))) if self.classes else None
            return Quality(acc, drop, agree, sqnr, ratio)
        wanted = None if only is None else {self.primary, *only}
        fid, _ = task_fidelity(self.task, self.reference_outputs, outs, wanted)   # the gate's own metrics
        return Quality(acc, drop, fid.get("top1_agreement"), fid.get("sqnr_db"), ratio,
                       fid.get("box_f1"), fid.get("cosine_similarity"), fid.get("mask_iou"))


def _fidelity_budgets(limits: dict, primary: str) -> list[Budget]:
    """The fidelity limits the gate will check on this model, as budgets: the task's own
    (primary) metric first, then every other one a repository policy sets (policy/check.py:
    built-in defaults gate only the task's metric)."""
    out = []
    for name in FIDELITY_LIMITS:
        limit = limits.get(name)
        metric = LIMITS[name][1]
        if limit is None or (getattr(limit, "builtin", False) and metric != primary):
            continue
        budget = (Budget("disagreement_pp", (1.0 - limit.value) * 100.0, limit.source)
                  if metric == "top1_agreement" else Budget(metric, limit.value, limit.source))
        out.insert(0, budget) if metric == primary else out.append(budget)
    return out


def budget_for(limits: dict, labelled: bool, classes: bool, primary: str | None = None) -> Budget:
    """The device policy's accuracy budget, with the fidelity limits the gate will check on the
    model's ``primary`` metric (top1_agreement, box_f1, cosine_similarity, mask_iou, sqnr_db); a fidelity
    budget alone when the data has no labels."""
    primary = primary or ("top1_agreement" if classes else "sqnr_db")
    acc = limits.get("max_accuracy_drop_pp")
    agree = limits.get("min_top1_agreement")
    fidelity = _fidelity_budgets(limits, primary)
    if labelled:
        # the gate checks fidelity with FP32 too: a candidate that keeps accuracy by luck while
        # changing predictions is not within budget
        also = tuple(fidelity)
        if acc is not None:
            return Budget("accuracy_drop_pp", acc.value, acc.source, also)
        return Budget("accuracy_drop_pp", 1.0, "default (the device policy sets no "
                                               "max_accuracy_drop_pp)", also)
    if fidelity and fidelity[0].kind == ("disagreement_pp" if primary == "top1_agreement" else primary):
        return Budget(fidelity[0].kind, fidelity[0].value, fidelity[0].source, tuple(fidelity[1:]))
    if primary in DEFAULTS:
        return Budget(primary, DEFAULTS[primary], f"default (no labels, no policy limit on {primary})",
                      tuple(fidelity))
    if classes and agree is not None:
        return Budget("disagreement_pp", (1.0 - agree.value) * 100.0, agree.source)
    if classes and acc is not None:
        return Budget("disagreement_pp", acc.value,
                      f"{acc.source} (no labels: top-1 disagreement with FP32 stands in for accuracy drop)")
    if classes:
        return Budget("disagreement_pp", 1.0, "default (no labels, no policy limit)")
    sqnr = limits.get("min_sqnr_db")
    if sqnr is not None:
        return Budget("sqnr_db", sqnr.value, sqnr.source)
    return Budget("sqnr_db", 30.0, "default (no labels, outputs are not class scores)")


def layer_blame(nodes: list[str], macs: dict[str, int], quantize_only: Callable[[str], Path],
                scorer: Scorer, deadline: float, clock: Callable[[], float] = time.monotonic,
                only: set[str] | None = None) -> list[dict]:
    """Quantize each node alone and measure what it does to the output. Ranked, worst first;
    nodes left when the deadline passes are listed as not analysed. ``only``: the fidelity
    metrics each row needs (the budget's, Budget.metrics()); None computes them all."""
    total = sum(macs.values()) or 1
    rows, skipped = [], []
    for node in nodes:
        if clock() > deadline:
            skipped.append(node)
            continue
        path = quantize_only(node)
        q = scorer.score(path, only)
        path.unlink(missing_ok=True)
        rows.append({"node": node, "mac_share": round(macs.get(node, 0) / total, 4),
                     "noise_ratio": q.noise_ratio, **q.to_dict()})
    rows.sort(key=lambda r: -r["noise_ratio"])        # output noise the node causes on its own
    noise_sum = sum(r["noise_ratio"] for r in rows if np.isfinite(r["noise_ratio"])) or 1.0
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
        r["error_share"] = round(r["noise_ratio"] / noise_sum, 4) if np.isfinite(r["noise_ratio"]) else None
        r["noise_ratio"] = _r(r["noise_ratio"], 6)
    for node in skipped:
        rows.append({"node": node, "mac_share": round(macs.get(node, 0) / total, 4), "rank": None,
                     "not_measured": "the search time budget ran out before this node"})
    return rows
