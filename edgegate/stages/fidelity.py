"""Task inference and label-free fidelity vs the FP32 model. First version: classification (one
score vector per sample) or regression; the detection, embedding and segmentation metrics and
per-channel SQNR come next."""
from __future__ import annotations
from dataclasses import dataclass
import numpy as np
from edgegate.stages.evaluate import fidelity

TASKS = ("classification", "detection", "embedding", "segmentation", "regression", "sequence")
PRIMARY_METRIC = {"classification": "top1_agreement", "segmentation": "top1_agreement",
                  "detection": "box_f1", "embedding": "cosine_similarity",
                  "regression": "sqnr_db", "sequence": "sqnr_db"}


@dataclass(frozen=True)
class DetectionLayout:
    kind: str
    output: int
    scores_output: int | None = None
    box_format: str = "xywh"
    channels_first: bool = True
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45
    match_iou: float = 0.5


@dataclass(frozen=True)
class TaskInfo:
    task: str
    inferred: bool
    why: str
    layout: DetectionLayout | None = None


def infer_task(declared, inputs, outputs, ref_outputs, layout=None):
    if declared != "auto":
        return TaskInfo(declared, False, "declared", layout)
    s = np.squeeze(ref_outputs[0][0])
    if s.ndim == 1 and s.size > 1:
        return TaskInfo("classification", True, "one score vector per sample")
    return TaskInfo("regression", True, "fallback")


def task_fidelity(info, ref, new):
    f = fidelity(ref, new)
    out = {"top1_agreement": f["top1_agreement"] if info.task == "classification" else None,
           "box_f1": None, "box_f1_detections_fp32": None,
           "cosine_similarity": f["cosine_similarity"], "sqnr_db": f["sqnr_db"], "sqnr_db_tensor": f["sqnr_db"],
           "sqnr_worst_output": None, "sqnr_worst_channel": None,
           "primary_metric": PRIMARY_METRIC[info.task]}
    why = {}
    if out["top1_agreement"] is None:
        why["top1_agreement"] = "the output is not one score vector per sample"
    return out, why
