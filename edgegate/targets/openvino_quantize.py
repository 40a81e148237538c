"""NNCF post-training quantization of an OpenVINO model for one device.

Plain PTQ (``nncf.quantize``) at level ``aggressive`` or when no labelled top1/top5 evaluation
and ``max_accuracy_drop_pp`` exist; otherwise NNCF's accuracy control
(``nncf.quantize_with_accuracy_control``), scored by the report's own metric on the same
evaluation data, with the policy's ``max_accuracy_drop_pp`` as its absolute budget. Layers
excluded in the configuration, and layers outside ``op_types``, go through NNCF's ignored scope.
When accuracy control had to keep layers in float, they are named with that reason and the layer
blame table (each layer quantized alone, ranked by the output error it causes) is computed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgegate.errors import ConversionError
from edgegate.targets.base import CompileJob
from edgegate.targets.openvino import (import_nncf, int8_nodes, ir_file, ov_ops_for, read_onnx,
                                       save_ir)


@dataclass
class OvQuantized:
    path: Path                                   # IR folder
    method: str
    calibration_samples: int
    kept: dict[str, str] = field(default_factory=dict)      # ONNX node -> why it is in float
    ignored_scope: list[str] = field(default_factory=list)  # OpenVINO op names
    accuracy_control: dict = field(default_factory=dict)
    blame: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _quiet():
    """NNCF's progress bars and INFO lines would flood the run's log."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _validation_fn(metric: str):
    k = 5 if metric == "top5" else 1

    def validate(compiled, items) -> tuple[float, list[float]]:
        out = compiled.output(0)
        per_item = []
        for feed, label in items:
            scores = np.asarray(compiled(feed)[out]).reshape(-1)
            top = np.argsort(-scores)[:k]
            per_item.append(100.0 if int(label) in top else 0.0)
        return (float(np.mean(per_item)) if per_item else 0.0), per_item

    return validate


def quantize_for_device(job: CompileJob, compute: list[str], macs: dict[str, int],
                        op_types: dict[str, str], make_runner: Callable[[Path], object],
                        fp32_dir: Path | None = None) -> OvQuantized:
    nncf = import_nncf()
    spec = job.quantization
    started = time.monotonic()
    model = read_onnx(job.model_path, job.display)
    ov_ops = ov_ops_for(model, compute)
    kept: dict[str, str] = {}
    notes: list[str] = []
    for node in spec.exclude_nodes:
        if node in ov_ops:
            kept[node] = "excluded in the configuration (exclude_nodes), NNCF ignored scope"
        else:
            notes.append(f"exclude_nodes: '{node}' is not a compute node of the OpenVINO graph; ignored")
    if spec.op_types:
        for node in compute:
            if op_types.get(node) not in spec.op_types and node in ov_ops:
                kept.setdefault(node, f"op type {op_types.get(node)} is not in quantization.op_types")
    ignored = sorted(name for node in kept for name in ov_ops.get(node, []))
    n_cal = len(job.calibration)
    calibration = nncf.Dataset([job.calibration.feed(i) for i in range(n_cal)])
    scope = nncf.IgnoredScope(names=ignored, validate=False) if ignored else None
    common = dict(subset_size=n_cal, ignored_scope=scope,
                  preset=nncf.QuantizationPreset.PERFORMANCE)

    ev = job.evaluation
    metric = ev.info.get("metric", "fidelity")
    limit = job.device.limits.get("max_accuracy_drop_pp")
    why_not = None
    if spec.level == "aggressive":
        why_not = "level aggressive: all-INT8 whatever the accuracy"
    elif ev.labels is None or metric not in ("top1", "top5"):
        why_not = "needs labelled evaluation data with metric top1 or top5"
    elif limit is None:
        why_not = "the device policy sets no max_accuracy_drop_pp"
    if spec.level == "conservative":
        notes.append("level conservative has no OpenVINO-specific recipe: INT8 with NNCF accuracy "
                     "control, as for balanced (the FP32 IR ships if INT8 is measured slower)")
    control: dict = {"used": why_not is None}
    try:
        with _quiet():
            if why_not is None:
                n_val = min(len(ev), spec.search_samples or len(ev))
                labels = ev.labels.reshape(len(ev), -1)[:, 0]
                validation = nncf.Dataset([(ev.feed(i), labels[i]) for i in range(n_val)],
                                          lambda item: item[0])
                quantized = nncf.quantize_with_accuracy_control(
                    model, calibration, validation, _validation_fn(metric),
                    max_drop=limit.value, drop_type=nncf.DropType.ABSOLUTE, **common)
                control.update(max_drop_pp=limit.value, source=limit.source, metric=metric,
                               samples=n_val)
                method = "nncf.quantize_with_accuracy_control (OpenVINO IR)"
            else:
                quantized = nncf.quantize(model, calibration, **common)
                control["why_not"] = why_not
                method = "nncf.quantize (OpenVINO IR)"
    except Exception as exc:
        raise ConversionError(f"NNCF could not quantize the model: {type(exc).__name__}: "
                              f"{str(exc)[:400]}", file=job.display,
                              fix="exclude the failing layers (quantization.exclude_nodes) or report "
                                  "the model to NNCF") from None
    path = save_ir(quantized, job.workdir / "nncf-int8.openvino")
    result = OvQuantized(path=path, method=method, calibration_samples=n_cal, kept=kept,
                         ignored_scope=ignored, accuracy_control=control, notes=notes)
    if control["used"]:
        _explain_reverted(result, job, compute, macs, ov_ops, model, calibration, common,
                          make_runner, fp32_dir, started, nncf)
    return result


def _explain_reverted(result: OvQuantized, job: CompileJob, compute, macs, ov_ops, model,
                      calibration, common, make_runner, fp32_dir, started, nncf) -> None:
    """Name the layers accuracy control put back in float, and rank every layer by blame."""
    done = set(int8_nodes(make_runner(result.path), compute))
    unexplained = [n for n in compute if n not in done and n not in result.kept]
    if not unexplained:
        result.accuracy_control["reverted"] = []
        return
    with _quiet():
        plain = nncf.quantize(model, calibration, **common)
    plain_dir = save_ir(plain, job.workdir / "nncf-plain.openvino")
    plain_int8 = set(int8_nodes(make_runner(plain_dir), compute))
    limit = result.accuracy_control
    reverted = [n for n in unexplained if n in plain_int8]
    for node in reverted:
        result.kept[node] = (f"reverted to float by NNCF accuracy control to stay within "
                             f"max_accuracy_drop_pp {limit['max_drop_pp']:g} ({limit['source']})")
    result.accuracy_control["reverted"] = reverted
    if reverted and fp32_dir is not None:
        result.blame = _blame(job, compute, macs, ov_ops, model, calibration, common,
                              make_runner, fp32_dir, started, nncf)


def _blame(job, compute, macs, ov_ops, model, calibration, common, make_runner, fp32_dir,
           started, nncf) -> list[dict]:
    from edgegate.stages.sensitivity import Scorer, layer_blame

    spec = job.quantization
    scorer = Scorer(fp32_dir, job.evaluation, make_runner, spec.search_samples, task=job.task)
    candidates = [n for n in compute if n in ov_ops]
    counter = iter(range(len(candidates)))

    def quantize_only(node: str) -> Path:
        others = sorted(name for other in candidates if other != node for name in ov_ops[other])
        with _quiet():
            alone = nncf.quantize(model, calibration, **{**common, "ignored_scope":
                                                         nncf.IgnoredScope(names=others, validate=False)})
        return ir_file(save_ir(alone, job.workdir / f"blame-{next(counter)}.openvino"))

    return layer_blame(candidates, macs, quantize_only, scorer, started + spec.search_time_s)
