"""Policy files and device profiles (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgegate.config.schema import QuantizationSpec

# name -> (direction, what it compares, unit) ; direction "max" fails when measured > limit.
LIMITS: dict[str, tuple[str, str, str]] = {
    "max_accuracy_drop_pp": ("max", "accuracy_drop_pp", "pp"),
    "min_speedup": ("min", "speedup", "x"),
    "max_size_mb": ("max", "size_mb_after", "MB"),
    "max_latency_p50_ms": ("max", "latency_p50_ms_after", "ms"),
    "min_size_ratio": ("min", "size_ratio", "x"),
    "min_top1_agreement": ("min", "top1_agreement", ""),
    "min_sqnr_db": ("min", "sqnr_db", "dB"),
    "min_box_f1": ("min", "box_f1", ""),
    "min_cosine_similarity": ("min", "cosine_similarity", ""),
    "min_mask_iou": ("min", "mask_iou", ""),
    "max_memory_mb": ("max", "peak_memory_mb", "MB"),
    "max_memory_growth_pct": ("max", "memory_growth_pct", "%"),
    "max_load_time_ms": ("max", "load_time_ms", "ms"),
    "max_latency_p99_ms": ("max", "latency_p99_ms", "ms"),
    "min_throughput_ips": ("min", "throughput_ips", "inferences/s"),
    "max_energy_mj": ("max", "energy_mj_per_inference", "mJ"),
}

# Label-free fidelity against the FP32 model: each task gates on one of these by default.
FIDELITY_LIMITS = ("min_top1_agreement", "min_box_f1", "min_cosine_similarity", "min_mask_iou",
                   "min_sqnr_db")


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_accuracy_drop_pp: float | None = Field(None, ge=0, description="percentage points")
    min_speedup: float | None = Field(None, gt=0, description="FP32 latency / compressed latency")
    max_size_mb: float | None = Field(None, gt=0, description="compressed artifact, 1 MB = 1e6 bytes")
    max_latency_p50_ms: float | None = Field(None, gt=0)
    min_size_ratio: float | None = Field(None, gt=0, description="original bytes / compressed bytes")
    min_top1_agreement: float | None = Field(
        None, ge=0, le=1, description="share of samples (pixels, for segmentation) whose top-1 class "
                                      "matches the FP32 model's")
    min_sqnr_db: float | None = Field(None, description="worst per-channel SQNR of the outputs vs FP32")
    min_box_f1: float | None = Field(None, ge=0, le=1, description="detections after NMS matched to "
                                                                   "the FP32 model's (F1)")
    min_cosine_similarity: float | None = Field(None, ge=-1, le=1, description="mean cosine of the "
                                                                               "outputs vs FP32")
    min_mask_iou: float | None = Field(
        None, ge=0, le=1, description="one-channel probability maps: foreground IoU of the artifact's "
                                      "map and the FP32 model's, both thresholded at 0.5")
    # memory, load time, tail latency, throughput: no built-in default; a repository sets them
    max_memory_mb: float | None = Field(
        None, gt=0, description="peak resident memory of loading and running the artifact in a fresh "
                                "process, above the process's baseline; 1 MB = 1e6 bytes")
    max_memory_growth_pct: float | None = Field(
        None, description="the artifact's peak memory vs the FP32 model's, in % (negative: must shrink)")
    max_load_time_ms: float | None = Field(None, gt=0, description="cold load of the artifact in a "
                                                                   "fresh process")
    max_latency_p99_ms: float | None = Field(
        None, gt=0, description="99th percentile latency (needs 100+ timed runs; decided on the lower "
                                "bound of its 95% interval)")
    min_throughput_ips: float | None = Field(
        None, gt=0, description="batch-1 inferences per second (decided on the upper bound of its 95% "
                                "interval)")
    max_energy_mj: float | None = Field(
        None, gt=0, description="energy per inference in mJ, measured by 'edgegate measure' on a "
                                "device runner with a power source (tegrastats, RAPL, a command)")


class DeviceProfile(Limits):
    target: str | None = Field(None, description="target id: onnxruntime, tflite, coreml, tensorrt")
    description: str | None = None
    candidates: list[str] | None = Field(
        None, description="several target ids (e.g. [onnxruntime, openvino]): each is compiled and "
                          "measured, the fastest that meets the policy ships; ties go to 'target'")
    try_candidates: Literal["always", "when-failing"] | None = Field(
        None, description="always (default): every candidate is measured; when-failing: the "
                          "profile's 'target' first, the other candidates only when it misses the "
                          "policy (cheaper; the fastest is then not guaranteed)")
    precision: Literal["int8", "fp16", "fp32", "mixed"] | None = None
    quantization: QuantizationSpec | None = None
    threads: int | None = Field(None, ge=1)
    runner: str | None = Field(None, description="runner label of a machine that is this device")
    io_dtype: Literal["int8", "uint8", "float32"] | None = Field(
        None, description="tflite INT8 models: dtype of the model's inputs and outputs")
    compiler: Literal["edgetpu"] | None = Field(
        None, description="a device compiler run after the target (edgetpu: edgetpu_compiler)")
    weight_compression: Literal["none", "int8", "palettize-8bit", "palettize-6bit",
                                "palettize-4bit"] | None = Field(
        None, description="coreml: compress the FP16 weights (int8 linear or k-means palettization)")
    timeout_s: float | None = Field(None, gt=0, description="compile + measure time limit per model "
                                                            "(isolated child process; default 1800)")
    accuracy_decision: Literal["measured", "ci95_upper", "ci95_lower"] | None = Field(
        None, description="what max_accuracy_drop_pp compares: the measured drop (default), the upper "
                          "bound of its paired 95% interval (strict) or the lower bound (fails only "
                          "on a drop the evaluation set proves)")
    memory_limit_mb: int | None = Field(None, ge=256, description="memory cap of that child process "
                                                                  "(default: 75% of this machine's RAM)")


class PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    devices: dict[str, DeviceProfile] = Field(default_factory=dict)
