"""The precision search: the fastest configuration that stays within the device's accuracy budget.

Levels (QuantizationSpec.level):
- conservative: FP16 and dynamic INT8 (weights INT8, activations quantized at run time) are
  measured against FP32; the fastest that meets the budget ships, else the FP32 floor.
- balanced (default), in this order: static INT8 with the activation type measured; weight
  granularity; when all-INT8 misses the budget, other calibration methods, then the layers the
  blame table ranks worst kept in float one by one until the budget is met; the speed passes
  (stages/speed_pass.py): each op class (depthwise Conv, pointwise Conv, MatMul, ...) whose INT8
  measurably slows the target goes back to float as a whole, then each remaining layer; when
  MatMul/Gemm hold most of the MACs, dynamic INT8 is measured against that static configuration
  and replaces it when clearly faster within the budget.
- aggressive: static INT8 wherever it is measured faster, whatever the accuracy.

The FP32 floor (stages/floor.py) is the model with ONNX Runtime's offline graph optimizations,
verified against the source outputs. Whether the INT8 configuration found is slower than FP32
is decided on the evidence (``int8_vs_floor``): every timing of it against FP32 in the search is
pooled; when the pooled interval lies below 1, or any one timing's does (mixed evidence: the
machine's load moved), the floor is built and timed head to head against INT8, interleaved,
twice, pooled. The floor wins when the pooled evidence says slower and the head to head does not
put INT8 measurably ahead of the floor, or, on mixed evidence, when the head to head puts the
floor measurably ahead (its whole pooled interval above 1). Then the fastest faithful
artifact measured ships instead (dynamic INT8 when the model has MatMul/Gemm, else the floor),
even when it cannot meet a size limit or min_speedup: the gate then fails on that limit, and the
verdict says why INT8 lost. Otherwise INT8 stays. This is measured even past the time budget.
Nothing slower than FP32 ships when something faster and faithful was measured.

Nothing is assumed faster: every speed decision comes from an interleaved measurement on this
host. Every candidate tried is recorded with its configuration, latency and quality. The
machine may be shared, so every decision taken on speed keeps the default (the device's
precision, the runtime's recommended activation type, per-channel weights, static INT8, a layer
or op class in INT8) unless the other choice wins in two independent timings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgegate.config.schema import QuantizationSpec
from edgegate.data.sources import Dataset
from edgegate.errors import ConversionError
from edgegate.stages.analyze import node_macs
from edgegate.stages.benchmark import PairTiming, benchmark_pair, pooled
from edgegate.stages.candidates import Built, Cfg, name
from edgegate.stages.fallback import dynamic_step, fallback, fastest_faithful
from edgegate.stages.fidelity import TaskInfo
from edgegate.stages.floor import OPTIMIZED, fp32_floor
from edgegate.stages.quantize import COMPUTE_OPS, classify_nodes, float_only_nodes, quantize
from edgegate.stages.sensitivity import AT_LEAST, Budget, Scorer, budget_for, layer_blame
from edgegate.stages.speed_pass import SPEED_MARGIN, class_pass, class_summary, layer_pass

METHOD_ORDER = ("minmax", "percentile", "entropy")
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
               "QLinearMatMul", "QLinearConv"}


@dataclass
class SearchResult:
    chosen: Built
    level: str
    budget: Budget
    met: bool | None
    verdict: str
    candidates: list[dict]
    blame: list[dict]
    kept: dict[str, str]                   # node -> why it is in float
    int8_nodes: list[str]
    fp16_nodes: list[str]
    macs: dict[str, int]
    op_types: dict[str, str]
    extra: dict = field(default_factory=dict)

    def coverage(self) -> dict:
        total = sum(self.macs.values()) or 0
        if not total:
            return {"int8": None, "fp16": None, "fp32": None}
        int8 = sum(self.macs.get(n, 0) for n in self.int8_nodes) / total
        fp16 = sum(self.macs.get(n, 0) for n in self.fp16_nodes) / total
        return {"int8": round(int8, 4), "fp16": round(fp16, 4), "fp32": round(max(0.0, 1 - int8 - fp16), 4)}


class PrecisionSearch:
    """One model on one ONNX Runtime device. ``make_runner(path)`` loads a model for timing
    and scoring; ``activation_types`` are measured in order (the first is the default)."""

    def __init__(self, *, model_path: Path, baseline_path: Path, calibration: Dataset,
                 evaluation: Dataset, spec: QuantizationSpec, limits: dict, workdir: Path,
                 make_runner: Callable[[Path], object], activation_types: list[str],
                 display: str = "", clock: Callable[[], float] = time.monotonic,
                 task: TaskInfo | None = None):
        self.model_path, self.baseline_path = model_path, baseline_path
        self.calibration, self.spec, self.workdir = calibration, spec, workdir
        self.make_runner, self.display, self.clock = make_runner, display, clock
        self.activation_types = activation_types
        self.started = clock()
        self.deadline = self.started + spec.search_time_s
        model = onnx.load(str(model_path), load_external_data=False)
        self.macs = node_macs(model)
        self.op_types = {n.name: n.op_type for n in model.graph.node}
        wanted = set(spec.op_types) if spec.op_types else COMPUTE_OPS
        # nodes touching a non-finite or extreme tensor (masks) can never be INT8
        self.forced = float_only_nodes(model_path, calibration, skip=spec.exclude_nodes)
        self.compute = [n.name for n in model.graph.node
                        if n.op_type in COMPUTE_OPS and n.op_type in wanted and n.name
                        and n.name not in spec.exclude_nodes and n.name not in self.forced]
        del model
        self.scorer = Scorer(baseline_path, evaluation, make_runner, spec.search_samples, task=task)
        labelled = self.scorer.accuracy_fp32 is not None
        self.budget = budget_for(limits, labelled, self.scorer.classes, self.scorer.primary)
        # size limits bound the speed pass: a layer kept in float for speed must not break them
        self.size_before = baseline_path.stat().st_size
        self.min_size_ratio = getattr(limits.get("min_size_ratio"), "value", None)
        self.max_size_bytes = (limits["max_size_mb"].value * 1e6 if limits.get("max_size_mb")
                               else None)
        self.min_speedup = getattr(limits.get("min_speedup"), "value", None)
        self.candidates: list[dict] = []
        self.feed = calibration.feed(0)
        self._fp32 = make_runner(baseline_path)
        self._n = 0
        self.timed_out_at: str | None = None
        self.vs_fp32: dict[Path, list[list[float]]] = {}
        self.pairs_vs_fp32: dict[Path, list[PairTiming]] = {}
        self.floor_note: str | None = None

    # ------------------------------------------------------------------ building and measuring

    def _out_of_time(self, stage: str) -> bool:
        if self.clock() > self.deadline:
            self.timed_out_at = self.timed_out_at or stage
            return True
        return False

    def build(self, cfg: Cfg, nodes: list[str] | None = None) -> Path:
        self._n += 1
        path = self.workdir / f"candidate-{self._n}.onnx"
        if cfg.precision == "int8":
            cache = self.workdir / f"calibration-{cfg.method}.json"
            quantize(self.model_path, path, self.calibration, activation_type=cfg.activation_type,
                     weight_type=self.spec.weight_type, per_channel=cfg.per_channel, method=cfg.method,
                     exclude=list(self.spec.exclude_nodes) + list(self.forced) + list(cfg.excluded),
                     op_types=self.spec.op_types, cache=cache, display=self.display, nodes=nodes)
        elif cfg.precision == "fp16":
            from edgegate.stages.quantize import convert_fp16
            convert_fp16(self.model_path, path, self.display)
        elif cfg.precision == "int8-dynamic":
            from edgegate.stages.quantize import quantize_dynamic_int8
            quantize_dynamic_int8(self.model_path, path, self.display)
        else:       # the FP32 floor: ONNX Runtime's offline graph optimization, verified
            path, self.floor_note = fp32_floor(self.model_path, path, self.calibration, self.display)
        return path

    def time_pair(self, a: Path, b: Path) -> PairTiming:
        """The one place the search reads the clock: models a and b timed interleaved."""
        ra = self._fp32 if a == self.baseline_path else self.make_runner(a)
        rb = self.make_runner(b)
        return benchmark_pair(lambda: ra.infer(self.feed), lambda: rb.infer(self.feed),
                              warmup=3, repeats=20, min_time_s=0.2, max_time_s=2.0)

    def timed(self, a: Path, b: Path) -> PairTiming:
        pair = self.time_pair(a, b)
        if a == self.baseline_path:      # every timing of a candidate against FP32 is evidence
            self.vs_fp32.setdefault(b, []).append([round(v, 3) for v in pair.speedup_ci95])
            self.pairs_vs_fp32.setdefault(b, []).append(pair)
        return pair

    def candidate(self, cfg: Cfg, stage: str, *, timed: bool = True, note: str = "") -> Built:
        """Build, score and (optionally) time one configuration against FP32; record it."""
        path = self.build(cfg)
        built = Built(cfg, path, self.scorer.score(path))
        rec = {"id": len(self.candidates) + 1, "stage": stage, "config": cfg.to_dict(),
               **built.quality.to_dict(), "meets_budget": self.budget.met(built.quality)}
        if timed:
            pair = self.timed(self.baseline_path, path)
            rec.update(latency_p50_ms=round(pair.after.p50_ms, 4),
                       latency_p50_ms_fp32=round(pair.before.p50_ms, 4),
                       speedup_vs_fp32=round(pair.speedup, 3),
                       speedup_ci95=[round(v, 3) for v in pair.speedup_ci95])
        else:
            rec["latency_p50_ms"] = None
        if cfg.precision == "fp32":
            rec["floor"] = self.floor_note
        if note:
            rec["note"] = note
        built.record = rec
        self.candidates.append(rec)
        return built

    def _error(self, b: Built) -> float:
        q = b.quality
        if self.budget.kind in ("accuracy_drop_pp", "disagreement_pp"):
            drop = q.accuracy_drop_pp if self.budget.kind == "accuracy_drop_pp" else q.disagreement_pp
            return (drop if drop is not None else 0.0) * 1e3 + q.noise_ratio
        short = self.budget.shortfall(q)      # box F1 / cosine / SQNR below the budget
        return (max(short, 0.0) if short is not None else 0.0) * 1e3 + q.noise_ratio

    def _meets(self, b: Built) -> bool:
        return bool(self.budget.met(b.quality))

    def _drop(self, b: Built | None) -> None:
        if b is not None:
            b.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ levels

    def run(self) -> SearchResult:
        level = self.spec.level
        if level == "conservative":
            return self._conservative()
        return self._int8(level)

    def _conservative(self) -> SearchResult:
        floor = self.candidate(Cfg("fp32"), "conservative")
        tried = [self._try(Cfg(p), "conservative") for p in ("fp16", "int8-dynamic")
                 if not self._out_of_time("conservative")]
        chosen = fastest_faithful(self, floor, [b for b in tried if b is not None])
        speed = chosen.record["speedup_vs_fp32"]
        if chosen is not floor:
            verdict = f"met: {chosen.cfg.precision} is {speed:.2f}x FP32 here within the budget"
        else:
            verdict = (f"FP32 kept: neither FP16 nor dynamic INT8 was measurably faster than FP32 here "
                       f"within the budget; shipped {self.floor_note}, {speed:.2f}x FP32")
        for b in [floor, *tried]:
            if b is not None and b is not chosen:
                self._drop(b)
        int8, fp16 = self._nodes_of(chosen)
        return self._result(chosen, "conservative", True, verdict, [], {}, int8, fp16,
                            extra={"fp32_floor": self._floor_record()})

    def _try(self, cfg: Cfg, stage: str) -> Built | None:
        """A timed candidate, or None (recorded) when its converter is missing or fails."""
        try:
            return self.candidate(cfg, stage)
        except Exception as exc:    # a converter that is missing or fails is recorded, not fatal
            self.candidates.append({"id": len(self.candidates) + 1, "stage": stage,
                                    "config": cfg.to_dict(), "latency_p50_ms": None,
                                    "note": f"not measurable: {str(exc)[:200]}"})
            return None

    def _floor_record(self) -> dict | None:
        if self.floor_note is None:
            return None
        return {"optimized": self.floor_note == OPTIMIZED, "description": self.floor_note}

    def _nodes_of(self, b: Built) -> tuple[list[str], list[str]]:
        """(INT8 compute nodes, FP16 compute nodes) of a built candidate."""
        compute = [n for n, t in self.op_types.items() if t in COMPUTE_OPS]
        if b.cfg.precision == "int8-dynamic":
            return self._dynamic_nodes(b.path), []
        if b.cfg.precision == "fp16":
            return [], compute
        if b.cfg.precision == "int8":
            return classify_nodes(onnx.load(str(b.path), load_external_data=False))[0], []
        return [], []

    def _dynamic_nodes(self, path: Path) -> list[str]:
        model = onnx.load(str(path), load_external_data=False)
        names = [n.name for n in model.graph.node if n.op_type in INTEGER_OPS]
        return [c for c in self.op_types if self.op_types[c] in COMPUTE_OPS
                and any(n == c or n.startswith(c + "_") for n in names)]

    def _int8(self, level: str) -> SearchResult:
        spec = self.spec
        kept = {n: "excluded in edgegate.yml" for n in spec.exclude_nodes}
        kept.update(self.forced)
        method = spec.calibration_method or self.calibration.info.get("method") or "minmax"
        base = Cfg("int8", self.activation_types[0], method, spec.per_channel)
        # 1. activation type: measured, both candidates timed against FP32
        # (the first is the runtime's recommended default; another ships only when clearly faster)
        current = self.candidate(base, "activation_type")
        for act in self.activation_types[1:]:
            other = self.candidate(replace(base, activation_type=act), "activation_type")
            if self._clearly_faster(current, other):
                self._drop(current)
                current = other
            else:
                self._drop(other)
        # 2. weight granularity, then calibration method (the latter only when accuracy needs it)
        if "per_channel" not in spec.model_fields_set and not self._out_of_time("granularity"):
            flip = self.candidate(replace(current.cfg, per_channel=not current.cfg.per_channel),
                                  "granularity")
            current = self._better(current, flip, level)
        ranges = {}
        if level == "balanced" and not self._meets(current) and spec.calibration_method is None:
            for m in METHOD_ORDER:
                if m == current.cfg.method or self._out_of_time("calibration_method"):
                    continue
                try:
                    other = self.candidate(replace(current.cfg, method=m), "calibration_method",
                                           timed=False)
                except ConversionError as exc:   # e.g. a histogram over a -inf mask tensor
                    self.candidates.append({"id": len(self.candidates) + 1,
                                            "stage": "calibration_method",
                                            "config": replace(current.cfg, method=m).to_dict(),
                                            "error": str(exc),
                                            "note": f"{m} calibration could not run; "
                                                    f"{current.cfg.method} kept"})
                    continue
                ranges[m] = range_change(self.workdir / f"calibration-{current.cfg.method}.json",
                                         self.workdir / f"calibration-{m}.json")
                other.record["range_change_vs_" + current.cfg.method] = ranges[m]
                if ranges[m]["max_relative_change"] == 0:
                    other.record["note"] = f"{m} calibration gave the same ranges as {current.cfg.method}"
                if self._error(other) < self._error(current):
                    other.record.update(self.timed_record(other.path))
                    self._drop(current)
                    current = other
                else:
                    self._drop(other)
        # 3. layer blame on the chosen base configuration
        blame = []
        if self.compute and not self._out_of_time("sensitivity"):
            blame = layer_blame(self.compute, self.macs,
                                lambda node: self.build(current.cfg, nodes=[node]),
                                self.scorer, self.deadline, self.clock,
                                only=self.budget.metrics() | {"sqnr_db"})
            for row in blame:
                row["op_type"] = self.op_types.get(row["node"])
        # 4. balanced: keep the worst-blamed layers in float until the budget is met
        best = current
        if level == "balanced" and not self._meets(current):
            ranked = [r["node"] for r in blame if r.get("rank")]
            for k in range(1, len(ranked)):          # at least one layer stays INT8
                if self._out_of_time("mixed_precision"):
                    break
                trial = self.candidate(replace(current.cfg, excluded=tuple(ranked[:k])),
                                       "mixed_precision", timed=False)
                if self._error(trial) < self._error(best):
                    if best is not current:
                        self._drop(best)
                    best = trial
                else:
                    self._drop(trial)
                if self._meets(trial):
                    break
            if best is not current:
                best.record.update(self.timed_record(best.path))
                self._drop(current)
            for node in best.cfg.excluded:
                row = next(r for r in blame if r["node"] == node)
                kept[node] = _blame_reason(row, self.budget)
        current = best
        # 5. speed: undo INT8 on every op class, then every layer, that measurably slows the target
        if level in ("balanced", "aggressive") and self._meets_or_any(current, level):
            current = class_pass(self, current, level, kept)
            current = layer_pass(self, current, level, kept)
        final = self.final_timing(current)
        # 6. balanced, MatMul/Gemm-heavy: dynamic INT8 measured against the static configuration
        dynamic, dyn_info = None, None
        if level == "balanced":
            current, final, dynamic, dyn_info = dynamic_step(self, current, final)
        if current.cfg.precision == "int8-dynamic":
            kept = {n: why for n, why in kept.items() if not why.startswith(("speed", "accuracy"))}
            int8 = self._dynamic_nodes(current.path)
            kept.update({n: "dynamic INT8 (chosen by measurement) quantizes MatMul/Gemm only"
                         for n, t in self.op_types.items()
                         if t in COMPUTE_OPS and n not in int8 and n not in kept})
        met = self.budget.met(current.quality)
        floor = self.int8_vs_floor(current, final)
        if floor is not None:
            return fallback(self, current, final, level, blame, dynamic, dyn_info, ranges, floor)
        self._drop(dynamic if dynamic is not current else None)
        verdict = self._verdict(current, met, level, final.get("speedup_vs_fp32"))
        if current.cfg.precision == "int8-dynamic":
            verdict = f"dynamic INT8 chosen by measurement: {dyn_info['why']}; {verdict}"
        q_nodes, _ = self._nodes_of(current)
        extra = {"final_timing": final, "calibration_ranges": ranges,
                 "speed_classes": class_summary(self.candidates)}
        if dyn_info:
            extra["dynamic_int8"] = dyn_info
        if spec.calibration_method is None and not ranges and level == "balanced":
            extra["calibration_method_note"] = (f"{current.cfg.method} kept: it met the budget, and the "
                                                "method changes ranges, not speed")
        return self._result(current, level, met, verdict, blame, kept, q_nodes, [], extra=extra)

    def int8_vs_floor(self, current: Built, final: dict) -> Built | None:
        """Is INT8 slower than FP32? Every timing of ``current`` against FP32 is pooled (the
        evidence). When the pooled interval, or any single timing's, lies below 1, the FP32
        floor is built and timed head to head against ``current`` (interleaved, twice, pooled),
        even past the time budget. The floor is returned (for the fallback) when the pooled
        evidence says slower and the head to head does not put ``current`` ahead of the floor
        (whole interval), or when the evidence is mixed and the head to head puts the floor
        ahead (whole interval); None (``current`` stays) otherwise."""
        evidence = self.vs_fp32.get(current.path, [])
        final["timings_vs_fp32_ci95"] = evidence
        pairs = self.pairs_vs_fp32.get(current.path, [])
        if not pairs:
            return None
        pool = pooled(*pairs)
        final["pooled_vs_fp32"] = {"speedup": round(pool.speedup, 3), "timings": len(pairs),
                                   "ci95": [round(v, 3) for v in pool.speedup_ci95]}
        some = [ci for ci in evidence if ci[1] < 1.0]
        slower = pool.speedup_ci95[1] < 1.0
        if not slower and not some:
            return None
        what = name(current.cfg)
        why = (f"{what} pooled over {len(pairs)} timings against FP32 is {pool.speedup:.2f}x "
               f"[{pool.speedup_ci95[0]:.2f}-{pool.speedup_ci95[1]:.2f}]"
               + (" (slower)" if slower else f", {len(some)} of them wholly below 1 (mixed)"))
        late = self._out_of_time("fallback")
        floor = self.candidate(Cfg("fp32"), "int8_vs_floor")
        checks = [self.timed(current.path, floor.path) for _ in range(2)]
        h2h = pooled(*checks)
        record = {"why": why, "int8_candidate": current.record.get("id"),
                  "floor_candidate": floor.record["id"],
                  "floor_over_int8_ci95": [[round(v, 3) for v in c.speedup_ci95] for c in checks],
                  "floor_over_int8_pooled": round(h2h.speedup, 3),
                  "floor_over_int8_pooled_ci95": [round(v, 3) for v in h2h.speedup_ci95],
                  "past_time_budget": late}
        floor.record["head_to_head_vs_int8"] = record
        final["int8_vs_floor"] = record
        h2h_txt = (f"head to head (two interleaved timings, pooled) the FP32 floor is "
                   f"{h2h.speedup:.2f}x [{h2h.speedup_ci95[0]:.2f}-{h2h.speedup_ci95[1]:.2f}] {what}")
        int8_ahead, floor_ahead = h2h.speedup_ci95[1] < 1.0, h2h.speedup_ci95[0] > 1.0
        if floor_ahead or (slower and not int8_ahead):
            verdict = "faster" if floor_ahead else f"not slower, and {what} was slower than FP32"
            final["note"] = f"{why}; {h2h_txt}: the floor is {verdict}, {what} does not ship" + (
                "; measured past the time budget: an INT8 slower than FP32 never ships" if late else "")
            record["floor_faster"] = True
            return floor
        final["note"] = f"{why}; {h2h_txt}: " + (f"{what} is faster, kept" if int8_ahead
                                                 else f"the floor is not faster, {what} kept")
        record["floor_faster"] = False
        floor.record["note"] = f"not faster than {what} head to head: {what} kept"
        self._drop(floor)
        return None

    def final_timing(self, b: Built) -> dict:
        """The configuration timed against FP32; a second, independent timing when it looks slower
        (like every speed decision, undoing INT8 needs two timings to agree)."""
        final = self.timed_record(b.path)
        if final["speedup_ci95"][1] < 1.0:
            final["confirmation_speedup_ci95"] = self.timed_record(b.path)["speedup_ci95"]
        return final

    def _size_breaks(self, path: Path) -> str | None:
        size = path.stat().st_size
        if self.min_size_ratio and self.size_before / size < self.min_size_ratio:
            return f"min_size_ratio {self.min_size_ratio:g} (it would be {self.size_before / size:.2f}x)"
        if self.max_size_bytes and size > self.max_size_bytes:
            return f"max_size_mb {self.max_size_bytes / 1e6:g} (it would be {size / 1e6:.2f} MB)"
        return None

    def _meets_or_any(self, b: Built, level: str) -> bool:
        return level == "aggressive" or self._meets(b)

    def timed_record(self, path: Path) -> dict:
        pair = self.timed(self.baseline_path, path)
        return {"latency_p50_ms": round(pair.after.p50_ms, 4),
                "latency_p50_ms_fp32": round(pair.before.p50_ms, 4),
                "speedup_vs_fp32": round(pair.speedup, 3),
                "speedup_ci95": [round(v, 3) for v in pair.speedup_ci95]}

    def _better(self, a: Built, b: Built, level: str) -> Built:
        """Both within budget (or aggressive): the faster; otherwise the more accurate."""
        if level == "aggressive" or (self._meets(a) and self._meets(b)):
            # switch from the configured setting only on a clear, confirmed margin, never on noise
            win = b if self._clearly_faster(a, b) else a
        else:
            win = b if self._error(b) < self._error(a) else a
        self._drop(a if win is b else b)
        return win

    def _clearly_faster(self, current: Built, other: Built, current_speedup: float | None = None
                        ) -> bool:
        """Is ``other`` clearly faster than ``current``? Only when their timings against FP32
        suggest a margin and then two independent head-to-head interleaved timings both put the
        whole 95% interval of the speedup above SPEED_MARGIN. Otherwise the current (default)
        configuration stays, so that what ships does not depend on a burst of load."""
        base = current.record.get("speedup_vs_fp32", 0) if current_speedup is None else current_speedup
        if other.record.get("speedup_vs_fp32", 0) <= SPEED_MARGIN * base:
            return False
        checks = []
        for _ in range(2):
            pair = self.timed(current.path, other.path)
            checks.append([round(v, 3) for v in pair.speedup_ci95])
            if pair.speedup_ci95[0] <= SPEED_MARGIN:
                break
        else:
            other.record["head_to_head_ci95"] = checks
            return True
        other.record["head_to_head_ci95"] = checks
        other.record["note"] = (f"not clearly faster than candidate {current.record.get('id')} "
                                f"head to head (needs the 95% interval above {SPEED_MARGIN:g}x twice)")
        return False

    def _verdict(self, b: Built, met: bool | None, level: str, speed: float | None) -> str:
        q, budget = b.quality, self.budget
        got = q.sqnr_db if budget.kind == "sqnr_db" else q.get(budget.kind)
        speed_txt = f" at {speed:.2f}x FP32 speed (search measurement)" if speed else ""
        what = f"{budget.kind} {got:.2f} vs budget {budget.value:g} ({budget.source})" \
            if got is not None else f"{budget.kind} not measured"
        late = f"; the time budget ({self.spec.search_time_s:g} s) ran out during " \
               f"{self.timed_out_at}, best configuration found is shipped" if self.timed_out_at else ""
        if level == "aggressive":
            return f"aggressive: INT8 wherever measured faster; {what}{speed_txt}{late}"
        if met:
            return f"met: {what}{speed_txt}{late}"
        return (f"failed: no configuration tried meets the accuracy budget; best found has {what}"
                f"{speed_txt}{late}")

    def _result(self, chosen: Built, level: str, met: bool | None, verdict: str, blame: list[dict],
                kept: dict[str, str], int8: list[str], fp16: list[str], extra: dict | None = None
                ) -> SearchResult:
        for rec in self.candidates:
            rec["chosen"] = rec is chosen.record
        return SearchResult(chosen, level, self.budget, met, verdict, self.candidates, blame, kept,
                            int8, fp16, self.macs, self.op_types, extra or {})

    def elapsed_s(self) -> float:
        return round(self.clock() - self.started, 2)


def _blame_reason(row: dict, budget: Budget) -> str:
    parts = []
    if row.get("accuracy_drop_pp") is not None:
        parts.append(f"{row['accuracy_drop_pp']:.2f} pp accuracy drop")
    elif row.get("disagreement_pp") is not None:
        parts.append(f"{row['disagreement_pp']:.2f} pp top-1 disagreement")
    if row.get("box_f1") is not None:
        parts.append(f"box F1 {row['box_f1']:.3f}")
    if row.get("mask_iou") is not None:
        parts.append(f"mask IoU {row['mask_iou']:.3f}")
    if row.get("cosine_similarity") is not None and budget.kind == "cosine_similarity":
        parts.append(f"cosine {row['cosine_similarity']:.4f}")
    if row.get("sqnr_db") is not None:
        parts.append(f"output SQNR {row['sqnr_db']:.1f} dB")
    sign = "≥" if budget.kind in AT_LEAST else "≤"
    return (f"accuracy: quantized alone it causes {', '.join(parts) or 'the most output error'} "
            f"(blame rank {row['rank']}); kept in float to meet {budget.kind} {sign} {budget.value:g}")


def range_change(a: Path, b: Path) -> dict:
    """How much calibration method b moved the activation ranges of method a (0: identical)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    try:
        ra, rb = load_tensors_data(a).data, load_tensors_data(b).data
    except Exception as exc:
        return {"max_relative_change": None, "note": f"not comparable: {str(exc)[:120]}"}
    changes = []
    for name in set(ra) & set(rb):
        lo_a, hi_a = (float(np.asarray(v).ravel()[0]) for v in ra[name].range_value)
        lo_b, hi_b = (float(np.asarray(v).ravel()[0]) for v in rb[name].range_value)
        width = max(hi_a - lo_a, 1e-12)
        changes.append(max(abs(lo_a - lo_b), abs(hi_a - hi_b)) / width)
    return {"tensors": len(changes), "max_relative_change": round(max(changes), 4) if changes else None,
            "mean_relative_change": round(float(np.mean(changes)), 4) if changes else None}
