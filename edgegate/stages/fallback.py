"""What ships instead of the static INT8 configuration the search found, and when.

- Dynamic INT8 (MatMul/Gemm weights INT8, activations quantized at run time) is measured at
  level balanced when MatMul/Gemm hold most of the MACs (attention, MLPs): on ONNX Runtime's CPU
  provider it is often the fast INT8 recipe there. It replaces static INT8 when within the budget
  and clearly faster head to head (two timings), or when static INT8 misses the budget.
- The fallback: when the configuration found is slower than FP32 on the pooled evidence, or
  the FP32 floor is faster head to head (search.PrecisionSearch.int8_vs_floor decides), the
  fastest faithful artifact measured ships: dynamic INT8 (when the model has MatMul/Gemm and it is
  measurably faster than FP32 and the floor, within budget) or the FP32 floor (stages/floor.py),
  even when that cannot meet a size limit or min_speedup. The gate then fails on that limit with
  the honest reason, and the verdict says why INT8 lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgegate.stages.candidates import Built, Cfg, name
from edgegate.stages.quantize import COMPUTE_OPS
from edgegate.stages.speed_pass import SPEED_MARGIN, class_summary

if TYPE_CHECKING:
    from edgegate.stages.search import PrecisionSearch, SearchResult

# dynamic INT8 is measured at level balanced when MatMul/Gemm hold at least this share of MACs
MATMUL_SHARE = 0.5
MATMUL_OPS = ("MatMul", "Gemm")


def fastest_faithful(s: PrecisionSearch, floor: Built, others: list[Built]) -> Built:
    """The floor (FP32, exact), unless a compressed candidate within the budget is measured
    faster than FP32 (the whole interval above 1) and faster than the floor."""
    good = [b for b in others if s._meets(b) and b.record["speedup_ci95"][0] > 1.0
            and b.record["speedup_vs_fp32"] > floor.record["speedup_vs_fp32"]]
    return max(good, key=lambda b: b.record["speedup_vs_fp32"]) if good else floor


def matmul_share(s: PrecisionSearch) -> float:
    total = sum(s.macs.values())
    mm = sum(v for n, v in s.macs.items() if s.op_types.get(n) in MATMUL_OPS)
    return mm / total if total else 0.0


def dynamic_step(s: PrecisionSearch, static: Built, final: dict):
    """Dynamic INT8 (MatMul/Gemm, activations quantized at run time) when MatMul/Gemm hold
    most of the MACs: it replaces the static configuration when within the budget and clearly
    faster head to head (or when static INT8 misses the budget). Returns (current, its final
    timing, the dynamic candidate or None, the record)."""
    share = matmul_share(s)
    info = {"matmul_mac_share": round(share, 4), "tried": False, "chosen": False}
    if share < MATMUL_SHARE:
        info["why"] = (f"not measured: MatMul/Gemm hold {share:.1%} of the MACs "
                       f"(< {MATMUL_SHARE:.0%})")
        return static, final, None, info
    if s._out_of_time("dynamic"):
        info["why"] = "not measured: the time budget ran out"
        return static, final, None, info
    dyn = s._try(Cfg("int8-dynamic"), "dynamic")
    if dyn is None:
        info["why"] = "not measurable (see its candidate)"
        return static, final, None, info
    info.update(tried=True, candidate=dyn.record["id"],
                speedup_vs_fp32=dyn.record["speedup_vs_fp32"],
                static_speedup_vs_fp32=final["speedup_vs_fp32"])
    if not s._meets(dyn):
        info["why"] = "outside the accuracy budget"
    elif not s._meets(static):
        info.update(chosen=True, why="within the budget, which static INT8 misses")
    elif s._clearly_faster(static, dyn, final["speedup_vs_fp32"]):
        info.update(chosen=True, head_to_head_ci95=dyn.record["head_to_head_ci95"],
                    why=f"clearly faster than static INT8 head to head (95% interval above "
                        f"{SPEED_MARGIN:g}x in two timings: {dyn.record['head_to_head_ci95']})")
    else:
        info["head_to_head_ci95"] = dyn.record.get("head_to_head_ci95")
        info["why"] = "not clearly faster than static INT8: static INT8 kept"
    if not info["chosen"]:
        dyn.record.setdefault("note", info["why"])
        return static, final, dyn, info
    s._drop(static)
    return dyn, s.final_timing(dyn), dyn, info


def fallback(s: PrecisionSearch, current: Built, final: dict, level: str, blame: list[dict],
              dynamic: Built | None, dyn_info: dict | None, ranges: dict, floor: Built
              ) -> "SearchResult":
    """INT8 (best found) lost to the FP32 ``floor`` (int8_vs_floor built and timed it): the
    fastest faithful artifact measured ships (dynamic INT8 when the model has MatMul/Gemm, else
    the FP32 floor), even when it cannot meet a size limit or min_speedup: the gate then fails
    on that limit."""
    lost = name(current.cfg)
    pool, h2h = final["pooled_vs_fp32"], final["int8_vs_floor"]
    why = (f"{lost} (best found) measured {pool['speedup']:.2f}x FP32 here ({pool['timings']} "
           f"timings pooled, 95% interval {pool['ci95'][0]:.2f}-{pool['ci95'][1]:.2f}); head to head "
           f"the FP32 floor was {h2h['floor_over_int8_pooled']:.2f}x {lost}")
    others = []
    if current.cfg.precision != "int8-dynamic" and any(
            t in MATMUL_OPS for t in s.op_types.values()):
        dyn = dynamic or s._try(Cfg("int8-dynamic"), "fallback")
        others = [dyn] if dyn is not None else []
    chosen = fastest_faithful(s, floor, others)
    speed = chosen.record["speedup_vs_fp32"]
    what = s.floor_note if chosen is floor else "dynamic INT8 (MatMul/Gemm)"
    verdict = f"{why}; shipped {what}, {speed:.2f}x FP32"
    for b in others:
        if b is not chosen:
            verdict += f"; dynamic INT8 measured {b.record['speedup_vs_fp32']:.2f}x" + (
                "" if s._meets(b) else " outside the accuracy budget")
    missed = limits_missed(s, chosen)
    if missed:
        verdict += (f"; it does not meet the device's {', '.join(missed)}, and nothing faster "
                    "and faithful was measured: the gate fails on that limit")
    for b in [floor, *others, current]:
        if b is not chosen:
            s._drop(b)
    int8, fp16 = s._nodes_of(chosen)
    kept = {n: "excluded in edgegate.yml" for n in s.spec.exclude_nodes}
    kept.update({n: f"speed: {why}" for n, t in s.op_types.items()
                 if t in COMPUTE_OPS and n not in int8 and n not in kept})
    record = {"why": f"{why}; shipped {what}, {speed:.2f}x FP32",
              "int8_speedup_vs_fp32": final["speedup_vs_fp32"],
              "int8_timings_vs_fp32_ci95": final["timings_vs_fp32_ci95"],
              "int8_pooled_vs_fp32": pool, "floor_vs_int8": h2h,
              "shipped": "fp32-floor" if chosen is floor else chosen.cfg.precision,
              "shipped_speedup_vs_fp32": speed,
              "measured": [b.record["id"] for b in [floor, *others]],
              "limits_not_met": missed}
    extra = {"int8_final_timing": final, "final_timing": chosen.record, "fallback": record,
             "fp32_floor": s._floor_record(), "calibration_ranges": ranges,
             "speed_classes": class_summary(s.candidates)}
    if dyn_info:
        extra["dynamic_int8"] = dyn_info
    return s._result(chosen, level, s.budget.met(chosen.quality), verdict, blame, kept,
                     int8, fp16, extra=extra)


def limits_missed(s: PrecisionSearch, b: Built) -> list[str]:
    """The device limits ``b`` cannot meet: a size limit (exact), and min_speedup when the
    search's own measurement puts ``b`` below it (the gate's longer measurement decides)."""
    missed = [m for m in [s._size_breaks(b.path)] if m]
    speed = b.record.get("speedup_vs_fp32")
    if s.min_speedup is not None and speed is not None and speed < s.min_speedup:
        missed.append(f"min_speedup {s.min_speedup:g} (the search measured {speed:.2f}x)")
    return missed
