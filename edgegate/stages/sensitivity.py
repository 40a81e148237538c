"""Per-layer sensitivity: how much each compute node, quantized on its own, moves the output.

The quality of a candidate model is measured against the FP32 model on the evaluation data: the
labelled accuracy drop when labels exist, otherwise top-1 disagreement with the FP32 outputs, and
always the output SQNR. The layer blame table quantizes one compute node at a time (everything
else in float, the calibration shared through the cache) and ranks nodes by the output noise
they cause alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgegate.data.sources import Dataset

BATCH = 64


@dataclass(frozen=True)
class Budget:
    """What "within budget" means for this device: which quality number, its limit, who set it."""

    kind: str            # accuracy_drop_pp | disagreement_pp | sqnr_db
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
        if self.kind == "sqnr_db":
            return None if quality.sqnr_db is None else bool(quality.sqnr_db >= self.value)
        got = quality.get(self.kind)
        return None if got is None else bool(got <= self.value + 1e-9)

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
    sqnr_db: float | None
    noise_ratio: float           # output noise power / signal power (0: identical)

    @property
    def disagreement_pp(self) -> float | None:
        return None if self.top1_agreement is None else (1.0 - self.top1_agreement) * 100.0

    def get(self, kind: str) -> float | None:
        return getattr(self, kind)

    def to_dict(self) -> dict:
        return {"accuracy": _r(self.accuracy), "accuracy_drop_pp": _r(self.accuracy_drop_pp),
                "top1_agreement": _r(self.top1_agreement, 4), "disagreement_pp": _r(self.disagreement_pp),
                "sqnr_db": _r(self.sqnr_db)}


def _r(value: float | None, digits: int = 3) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)


def run_outputs(infer: Callable[[dict], list], data: Dataset, batchable: bool) -> np.ndarray:
    """Output 0 of every sample as one (samples, ...) array, batched when the model allows it."""
    n = len(data)
    if batchable and not any(data.squeeze.values()):
        try:
            parts = [infer({k: v[i:i + BATCH] for k, v in data.inputs.items()})[0]
                     for i in range(0, n, BATCH)]
            out = np.concatenate(parts, axis=0)
            if len(out) == n:
                return out
        except Exception:
            pass    # a fixed batch axis: fall back to one sample at a time
    outs = [np.asarray(infer(data.feed(i))[0]) for i in range(n)]
    if all(o.ndim and o.shape[0] == 1 for o in outs):
        outs = [o[0] for o in outs]
    return np.stack(outs)


class Scorer:
    """Scores candidate models against the FP32 model on (a subset of) the evaluation data."""

    def __init__(self, fp32_path: Path, data: Dataset, make_runner: Callable[[Path], object],
                 max_samples: int | None = None):
        if max_samples and len(data) > max_samples:
            data = data.subset(np.arange(max_samples))
        self.data = data
        self.make_runner = make_runner
        self.batchable = True
        self.metric = data.info.get("metric", "top1")
        self.labels = data.labels if self.metric in ("top1", "top5") else None
        self.reference = self.outputs(fp32_path).astype(np.float64)
        self.classes = self.reference.ndim == 2 and self.reference.shape[1] > 1
        self.accuracy_fp32 = self._accuracy(self.reference)

    def outputs(self, path: Path) -> np.ndarray:
        runner = self.make_runner(path)
        return run_outputs(runner.infer, self.data, self.batchable)

    def _accuracy(self, out: np.ndarray) -> float | None:
        if self.labels is None or not self.classes:
            return None
        labels = self.labels.reshape(-1)
        k = 5 if self.metric == "top5" else 1
        top = np.argsort(-out, axis=1)[:, :k]
        return float(np.mean(np.any(top == labels[:, None], axis=1)) * 100.0)

    def score(self, path: Path) -> Quality:
        out = self.outputs(path).astype(np.float64)
        ref = self.reference
        noise = float(np.sum((out - ref) ** 2))
        signal = float(np.sum(ref ** 2))
        ratio = noise / signal if signal > 0 else (0.0 if noise == 0 else float("inf"))
        sqnr = float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else None)
        agree = float(np.mean(out.argmax(1) == ref.argmax(1))) if self.classes else None
        acc = self._accuracy(out)
        drop = None if acc is None or self.accuracy_fp32 is None else self.accuracy_fp32 - acc
        return Quality(acc, drop, agree, sqnr, ratio)


def budget_for(limits: dict, labelled: bool, classes: bool) -> Budget:
    """The device policy's accuracy budget; a fidelity proxy when the data has no labels."""
    acc = limits.get("max_accuracy_drop_pp")
    agree = limits.get("min_top1_agreement")
    if labelled:
        # the gate checks agreement with FP32 too: a candidate that keeps accuracy by luck while
        # changing predictions is not within budget
        also = (Budget("disagreement_pp", (1.0 - agree.value) * 100.0, agree.source),) \
            if classes and agree is not None else ()
        if acc is not None:
            return Budget("accuracy_drop_pp", acc.value, acc.source, also)
        return Budget("accuracy_drop_pp", 1.0, "default (the device policy sets no "
                                               "max_accuracy_drop_pp)", also)
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
                scorer: Scorer, deadline: float, clock: Callable[[], float] = time.monotonic
                ) -> list[dict]:
    """Quantize each node alone and measure what it does to the output. Ranked, worst first;
    nodes left when the deadline passes are listed as not analysed."""
    total = sum(macs.values()) or 1
    rows, skipped = [], []
    for node in nodes:
        if clock() > deadline:
            skipped.append(node)
            continue
        path = quantize_only(node)
        q = scorer.score(path)
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
