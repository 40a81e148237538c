"""Statistics a reviewer can rely on: the accuracy drop with a paired 95% interval, and whether an
evaluation set is large enough to support a policy's limit at all.

The FP32 model and the compressed one are scored on the same samples, so the drop is a paired
difference: only samples whose correctness changed (discordant pairs) carry information. The
interval is Agresti and Min's adjusted Wald interval for a difference of paired proportions
(half a count added to each cell of the 2x2 table), which stays honest when no sample changed:
with n samples it is never narrower than about +-196/(n+2) pp.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from edgegate.stages.evaluate import pick_output, stacked

Z95 = 1.959963984540054


def correct_per_sample(metric: str, out: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Per-sample correctness (bool) for top1/top5; None for metrics that are not a proportion."""
    if metric not in ("top1", "top5"):
        return None
    k = 1 if metric == "top1" else 5
    scores = out.reshape(out.shape[0], -1).astype(np.float64)
    labels = labels.reshape(-1).astype(np.int64)
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.any(top == labels[:, None], axis=1)


def paired_drop_ci95_pp(before: np.ndarray, after: np.ndarray) -> tuple[float, float, int]:
    """(low, high, discordant samples) of accuracy(before) - accuracy(after) in percentage points."""
    before = np.asarray(before, dtype=bool)
    after = np.asarray(after, dtype=bool)
    if before.shape != after.shape or before.size == 0:
        raise ValueError("paired samples must have the same, non-zero length")
    n = before.size
    lost = int(np.sum(before & ~after))        # right before, wrong after
    gained = int(np.sum(~before & after))      # wrong before, right after
    n_adj = n + 2.0
    b, c = lost + 0.5, gained + 0.5
    diff = (b - c) / n_adj
    var = max((b + c) - (b - c) ** 2 / n_adj, 0.0) / n_adj ** 2
    half = Z95 * math.sqrt(var)
    low, high = max(diff - half, -1.0), min(diff + half, 1.0)
    return low * 100.0, high * 100.0, lost + gained


def best_case_half_width_pp(samples: int) -> float:
    """The interval's half-width when no sample changed: the finest drop this set can resolve."""
    return 100.0 * Z95 / (samples + 2.0)


def samples_needed(limit_pp: float) -> int:
    """The smallest evaluation set whose best-case interval fits inside ``limit_pp``."""
    if limit_pp <= 0:
        return 0
    needed = 100.0 * Z95 / limit_pp - 2.0
    if not math.isfinite(needed):        # a limit so tiny (e.g. 1e-313 pp) no data set resolves it
        return sys.maxsize
    return max(1, math.ceil(needed))


def evaluation_too_small(samples: int | None, limit_pp: float) -> str | None:
    """A warning when ``samples`` cannot support a ``max_accuracy_drop_pp`` of ``limit_pp``."""
    if not samples or limit_pp <= 0:
        return None
    half = best_case_half_width_pp(samples)
    if half <= limit_pp:
        return None
    return (f"evaluation set too small for this limit: {samples} samples give a 95% interval of "
            f"at least ±{half:.2f} pp (one sample is {100.0 / samples:.2f} pp), wider than "
            f"{limit_pp:g} pp; use at least {samples_needed(limit_pp)} labelled samples")


def paired_accuracy(metric: str | None, ref_outputs: list, new_outputs: list, which: int | str,
                    names: list[str], labels: np.ndarray | None, display: str = "") -> dict:
    """Metrics fields for the paired interval (empty when the metric is not top1/top5)."""
    if labels is None or metric not in ("top1", "top5"):
        return {}
    before = correct_per_sample(metric, stacked(pick_output(ref_outputs, which, names, display)), labels)
    after = correct_per_sample(metric, stacked(pick_output(new_outputs, which, names, display)), labels)
    if before is None or after is None or before.shape != after.shape or before.size == 0:
        return {}
    low, high, discordant = paired_drop_ci95_pp(before, after)
    return {"accuracy_drop_ci95_pp": [low, high], "discordant_samples": discordant}
