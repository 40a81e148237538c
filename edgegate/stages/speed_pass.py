"""The speed passes of the precision search: INT8 undone where it measurably slows the target.

Some op types run slower quantized on a runtime (depthwise Conv on ONNX Runtime's CPU provider,
for one), but one small layer's effect on the whole model is below the timing margin. So the
op-class pass comes first: the quantized compute nodes are grouped by class (depthwise Conv,
grouped Conv, pointwise 1x1 Conv, other Conv, MatMul, Gemm, ...) and each whole class, largest
MAC share first, is put in float and timed head to head against the current configuration. The
per-layer pass then tries what remains one layer at a time, smallest first.

Every change needs the whole 95% interval of the speedup above SPEED_MARGIN in two independent
interleaved timings, must stay within the accuracy budget (balanced) and must not break a size
limit; otherwise INT8 stays.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import onnx

from edgegate.stages.candidates import Built
from edgegate.stages.quantize import COMPUTE_OPS, classify_nodes

if TYPE_CHECKING:
    from edgegate.stages.search import PrecisionSearch

# A layer goes back to float for speed only when the whole 95% interval of the speedup is above
# this, in two independent interleaved measurements: noise must never change what ships.
SPEED_MARGIN = 1.03


def op_classes(model: onnx.ModelProto) -> dict[str, str]:
    """Compute node -> its class, as the speed pass groups them."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return {n.name: _op_class(n, shapes) for n in model.graph.node
            if n.name and n.op_type in COMPUTE_OPS}


def _op_class(node: onnx.NodeProto, shapes: dict[str, tuple]) -> str:
    if node.op_type != "Conv":
        return node.op_type
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if group > 1:
        # weights (out, in / group, k...): one input channel per group is depthwise
        return "depthwise Conv" if w and len(w) > 1 and w[1] == 1 else "grouped Conv"
    if w and len(w) > 2 and all(d == 1 for d in w[2:]):
        return "pointwise Conv (1x1)"
    return "Conv"


def quantized_nodes(b: Built) -> list[str]:
    return classify_nodes(onnx.load(str(b.path), load_external_data=False))[0]


def try_in_float(s: "PrecisionSearch", current: Built, nodes: list[str], level: str,
                 stage: str, info: dict) -> tuple[Built | None, dict]:
    """Build ``current`` with ``nodes`` also in float, time it head to head against current and
    return it when it is clearly faster (confirmed), within budget and size limits, else None.
    The attempt is recorded as a candidate either way."""
    cfg = replace(current.cfg, excluded=current.cfg.excluded + tuple(nodes))
    path = s.build(cfg)
    pair = s.timed(current.path, path)
    rec = {"id": len(s.candidates) + 1, "stage": stage, **info, "config": cfg.to_dict(),
           "latency_p50_ms": round(pair.after.p50_ms, 4),
           "latency_p50_ms_previous": round(pair.before.p50_ms, 4),
           "speedup_vs_previous": round(pair.speedup, 3),
           "speedup_ci95": [round(v, 3) for v in pair.speedup_ci95]}
    s.candidates.append(rec)

    def reject(note: str = "") -> tuple[None, dict]:
        rec["accepted"] = False
        if note:
            rec["note"] = note
        path.unlink(missing_ok=True)
        return None, rec

    if pair.speedup_ci95[0] <= SPEED_MARGIN:          # not clearly faster in float: keep INT8
        return reject()
    if s._size_breaks(path):
        return reject("faster in float, but the artifact would break the device's size limit")
    # a second, independent interleaved measurement must agree before INT8 is undone: one
    # timing on a shared machine can be skewed by a burst of load on the other core
    again = s.timed(current.path, path)
    rec["confirmation_speedup_ci95"] = [round(v, 3) for v in again.speedup_ci95]
    if again.speedup_ci95[0] <= SPEED_MARGIN:
        return reject("not confirmed by a second measurement")
    trial = Built(cfg, path, s.scorer.score(path), rec)
    rec.update(trial.quality.to_dict(), meets_budget=s.budget.met(trial.quality))
    if level == "balanced" and not s._meets(trial):
        return reject("faster in float, but outside the accuracy budget")
    rec["accepted"] = True
    return trial, rec


def class_pass(s: "PrecisionSearch", current: Built, level: str, kept: dict[str, str]) -> Built:
    """Each op class of the INT8 nodes in float as a whole, largest MAC share first."""
    classes = op_classes(onnx.load(str(s.model_path), load_external_data=False))
    total = sum(s.macs.values()) or 1
    groups: dict[str, list[str]] = {}
    for node in quantized_nodes(current):
        groups.setdefault(classes.get(node, s.op_types.get(node, "?")), []).append(node)
    order = sorted(groups, key=lambda c: -sum(s.macs.get(n, 0) for n in groups[c]))
    for label in order:
        if s._out_of_time("speed_class"):
            break
        remaining = set(quantized_nodes(current))
        nodes = [n for n in groups[label] if n in remaining]
        info = {"op_class": label, "nodes": len(nodes),
                "mac_share": round(sum(s.macs.get(n, 0) for n in nodes) / total, 4)}
        if not nodes:
            continue
        if not remaining - set(nodes):
            # the whole INT8 part: the comparison of the configuration with FP32 decides that
            s.candidates.append({"id": len(s.candidates) + 1, "stage": "speed_class", **info,
                                 "accepted": False, "latency_p50_ms": None,
                                 "note": "every INT8 node is of this class: the timing against "
                                         "FP32 decides it"})
            continue
        trial, rec = try_in_float(s, current, nodes, level, "speed_class", info)
        if trial is None:
            continue
        why = (f"speed: {label} runs slower in INT8 here: {rec['latency_p50_ms']:.3f} ms in float vs "
               f"{rec['latency_p50_ms_previous']:.3f} ms quantized (model latency), "
               f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}")
        kept.update({n: why for n in nodes})
        s._drop(current)
        current = trial
    return current


def layer_pass(s: "PrecisionSearch", current: Built, level: str, kept: dict[str, str]) -> Built:
    """Every remaining INT8 layer in float on its own, smallest MACs first, within the time budget."""
    for node in sorted(quantized_nodes(current), key=lambda n: s.macs.get(n, 0)):
        if s._out_of_time("speed"):
            break
        trial, rec = try_in_float(s, current, [node], level, "speed", {})
        if trial is None:
            continue
        kept[node] = (f"speed: INT8 was slower here ({rec['latency_p50_ms']:.3f} ms in float vs "
                      f"{rec['latency_p50_ms_previous']:.3f} ms quantized, model latency)")
        s._drop(current)
        current = trial
    return current


def class_summary(candidates: list[dict]) -> list[dict]:
    """The op-class pass as the report shows it: each class tried, its size and its timings."""
    keys = ("op_class", "nodes", "mac_share", "accepted", "latency_p50_ms",
            "latency_p50_ms_previous", "speedup_vs_previous", "speedup_ci95",
            "confirmation_speedup_ci95", "note")
    return [{k: c[k] for k in keys if k in c} | {"candidate": c["id"]}
            for c in candidates if c.get("stage") == "speed_class"]
