"""report.json: versioned, frozen records. Everything the comment shows comes from here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgegate.errors import InputError

SCHEMA_VERSION = 1

Status = Literal["passed", "failed", "error", "skipped"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def plain(value: Any) -> Any:
    """Free-form report fields as JSON types: numpy scalars and arrays (a numpy bool is not a
    bool) become Python values, tuples become lists, recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if type(value).__module__ == "numpy":
        return plain(value.tolist()) if hasattr(value, "tolist") else value
    return value


class Check(_Record):
    limit: str                         # e.g. max_accuracy_drop_pp
    metric: str                        # the metrics field it compares
    threshold: float
    measured: float | None
    passed: bool | None                # None: not measured here
    source: str                        # policy file:line that set the limit
    builtin: bool = False              # set by a built-in device profile (source: its packaged file)
    note: str | None = None
    decided_on: float | None = None    # the value compared (e.g. an interval bound), if not measured
    warning: str | None = None         # e.g. an evaluation set too small for this limit


class Metrics(_Record):
    size_bytes_before: int | None = None
    size_bytes_after: int | None = None
    size_ratio: float | None = None
    size_mb_after: float | None = None
    latency_p50_ms_before: float | None = None
    latency_p50_ms_after: float | None = None
    latency_p90_ms_before: float | None = None
    latency_p90_ms_after: float | None = None
    latency_p50_ci95_ms_before: list[float] | None = None
    latency_p50_ci95_ms_after: list[float] | None = None
    latency_runs: int | None = None
    speedup: float | None = None
    speedup_ci95: list[float] | None = None
    # tail latency and batch-1 throughput from the same timed runs (stages/benchmark.py); the p99
    # only from benchmark.P99_MIN_RUNS runs on, else null with the reason in not_measured
    latency_p99_ms: float | None = None            # the artifact
    latency_p99_ci95_ms: list[float] | None = None
    latency_p99_ms_fp32: float | None = None
    throughput_ips: float | None = None            # inferences/s at batch 1 (1000 / mean ms)
    throughput_ci95_ips: list[float] | None = None
    throughput_ips_fp32: float | None = None
    # each model loaded cold in a fresh process that then runs it (stages/memory.py): RSS
    # high-water mark above the process's RSS before loading, 1 MB = 1e6 bytes
    peak_memory_mb: float | None = None
    peak_memory_mb_fp32: float | None = None
    memory_growth_pct: float | None = None         # artifact vs FP32 peak memory, in %
    load_time_ms: float | None = None              # runner construction, cold (fresh process)
    load_time_ms_fp32: float | None = None
    # on a device runner with a power source only (edgegate measure, stages/power.py): the board's
    # energy during back-to-back inferences of the artifact / inferences, idle power included
    energy_mj_per_inference: float | None = None
    power_mw_mean: float | None = None
    metric: str | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_drop_pp: float | None = None
    eval_samples: int | None = None
    # label-free fidelity against the FP32 model (stages/fidelity.py); the task decides which gates
    task: str | None = None                        # classification | detection | embedding | ...
    task_why: str | None = None                    # declared, or what the inference saw
    primary_metric: str | None = None              # the fidelity metric this task gates on
    top1_agreement: float | None = None            # per sample (per pixel for segmentation)
    mask_iou: float | None = None                  # one-channel probability map: foreground IoU at 0.5
    mask_agreement: float | None = None            # ... and the share of pixels on the same side of 0.5
    box_f1: float | None = None                    # detections after NMS vs the FP32 model's
    box_f1_detections_fp32: int | None = None
    cosine_similarity: float | None = None
    sqnr_db: float | None = None                   # worst channel of the worst output
    sqnr_db_tensor: float | None = None            # whole-tensor SQNR of the worst output
    sqnr_worst_output: int | None = None
    sqnr_worst_channel: int | None = None
    not_measured: dict[str, str] = Field(default_factory=dict)   # field -> why it is null
    # paired statistics over the evaluation samples (edgegate/stages/stats.py)
    accuracy_drop_ci95_pp: list[float] | None = None
    discordant_samples: int | None = None          # samples whose correctness changed


class Artifact(_Record):
    path: str
    sha256: str
    size_bytes: int
    precision: str
    format: str
    # how the artifact is fed, per source (ONNX) input, when not as the source is:
    # {"transpose": [0, 2, 3, 1]} for a channels-last artifact, {"name": ...} for a renamed input.
    # Every runner of the artifact (gate, base-vs-head timing, `edgegate measure` on a device) and
    # the device app read it from here.
    input_binding: dict[str, dict[str, Any]] | None = None


class ErrorInfo(_Record):
    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    fix: str | None = None


class CacheInfo(_Record):
    """A result carried forward from the results cache instead of being recomputed."""

    key: str
    hit: bool
    commit: str | None = None          # the commit whose run measured it
    created_at: str | None = None


class BaselineResult(_Record):
    """The same model and device on the base commit, and head minus base."""

    commit: str
    path: str
    sha256: str | None = None
    source: Literal["cache", "computed", "unchanged"]
    status: Status
    precision: str | None = None
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    delta: dict[str, float | int | None] = Field(default_factory=dict)   # head - base
    regressions: list[str] = Field(default_factory=list)               # metrics that got worse
    note: str | None = None


class Alternative(_Record):
    """A candidate runtime measured for the same device and not shipped (see DeviceResult.selection)."""

    target: str
    status: Status
    reason: str | None = None
    precision: str | None = None
    artifact: str | None = None                # kept under alternatives/, not released
    sha256: str | None = None
    size_bytes_after: int | None = None
    latency_p50_ms_before: float | None = None   # FP32 on this candidate's runtime
    latency_p50_ms_after: float | None = None
    speedup: float | None = None
    accuracy_after: float | None = None
    accuracy_drop_pp: float | None = None
    top1_agreement: float | None = None
    peak_memory_mb: float | None = None
    violations: list[str] = Field(default_factory=list)   # limits it broke
    measurement: dict[str, Any] = Field(default_factory=dict)
    quantization_method: str | None = None
    int8_mac_share: float | None = None
    head_to_head: dict[str, Any] | None = None  # its p50 / the shipped one's, timed interleaved


class DeviceResult(_Record):
    device: str
    target: str
    status: Status
    reason: str | None = None
    artifact: Artifact | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    measurement: dict[str, Any] = Field(default_factory=dict)
    quantization: dict[str, Any] = Field(default_factory=dict)
    checks: list[Check] = Field(default_factory=list)
    violations: list[Check] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None
    duration_s: float | None = None
    cache: CacheInfo | None = None
    baseline: BaselineResult | None = None
    selection: str | None = None       # why this target shipped, when the device lists candidates
    alternatives: list[Alternative] = Field(default_factory=list)   # the candidates not shipped

    @field_validator("measurement", "quantization", mode="before")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        return plain(value)


class ModelReport(_Record):
    path: str
    name: str
    sha256: str | None = None
    size_bytes: int | None = None
    framework: str | None = None
    framework_version: str | None = None
    export: str | None = None
    change: str = "explicit"
    old_path: str | None = None
    why: list[str] = Field(default_factory=list)   # what changed base..head that re-gates it
    status: Literal["passed", "failed", "error"] = "passed"
    error: ErrorInfo | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    results: list[DeviceResult] = Field(default_factory=list)


class PolicyChange(_Record):
    """A limit whose value differs between the base commit's policy and the pull request's."""

    device: str
    limit: str
    old: float | None                  # None: the limit did not exist
    new: float | None                  # None: the limit was removed
    change: Literal["loosened", "tightened"]
    source: str                        # file:line of the new value (or of the old one if removed)
    allowed: bool                      # loosening allowed by the base commit's configuration
    model: str | None = None           # a model's own gating (devices, task, configured at all)


class DiskUsage(_Record):
    """What the run wrote: the artifacts it keeps and the largest its work folder grew."""

    artifact_bytes_total: int = 0      # every file under OUT/artifacts at the end of the run
    work_bytes_peak: int = 0           # the largest one model's OUT/.work folder grew to
    work_dir_removed: bool = True      # OUT/.work deleted at the end (false with --keep-work)


class Report(_Record):
    schema_version: Literal[1] = SCHEMA_VERSION
    edgegate_version: str
    created_at: str
    verdict: Literal["passed", "failed", "error"]
    exit_code: int
    commits: dict[str, str | None] = Field(default_factory=dict)
    toolchain: dict[str, str | None] = Field(default_factory=dict)
    machine: dict[str, Any] = Field(default_factory=dict)
    policy_files: list[str] = Field(default_factory=list)
    models: list[ModelReport] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    errors: list[ErrorInfo] = Field(default_factory=list)   # run-level (configuration) errors
    policy_changes: list[PolicyChange] = Field(default_factory=list)   # head's limits vs base's
    carried: list[ModelReport] = Field(default_factory=list)   # unchanged models, from the cache
    only: list[str] = Field(default_factory=list)   # MODEL@DEVICE pairs of a partial report
    disk: DiskUsage | None = None      # disk usage of the run (absent in older reports)


# not_measured reason of an SQNR that is infinite (JSON has no Infinity): a perfect value, not a gap
IDENTICAL_OUTPUTS = "outputs are identical to the reference (infinite SQNR)"


def finite(value: float | None) -> float | None:
    """JSON has no Infinity/NaN: such values become null (the caller records why)."""
    if value is None or not isinstance(value, float):
        return value
    return value if math.isfinite(value) else None


def write_report(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report.model_dump(mode="json"), indent=2, allow_nan=False) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


MAX_REPORT_BYTES = 64 << 20


def read_report(path: Path) -> Report:
    if not path.is_file():
        raise InputError("report not found", file=str(path), fix="run 'edgegate run' first")
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise InputError("report is larger than 64 MiB", file=str(path), fix="check the file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", file=str(path),
                         fix="pass the report.json written by 'edgegate run'") from None
    if isinstance(data, dict) and data.get("schema_version") not in (None, SCHEMA_VERSION):
        raise InputError(f"report schema_version {data.get('schema_version')} is not supported "
                         f"by this EdgeGate (reads {SCHEMA_VERSION})", file=str(path),
                         fix="render it with the EdgeGate version that wrote it")
    try:
        return Report.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(f"not an EdgeGate report: {loc}: {err['msg']}", file=str(path),
                         fix="pass the report.json written by 'edgegate run'") from None
