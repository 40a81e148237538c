"""The edgegate.yml schema (pydantic). Unknown keys are errors, so typos are caught with file:line."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

METRICS = ("top1", "top5", "mse", "fidelity")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocess(_Strict):
    """How a folder of images becomes an input tensor."""

    resize: tuple[int, int] | None = Field(None, description="[height, width] to resize to")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR", "GRAY"] = "RGB"
    scale: float = Field(1 / 255, description="pixel values are multiplied by this first")
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    dtype: Literal["float32", "float16", "uint8", "int8"] = "float32"

    @field_validator("std")
    @classmethod
    def _no_zero_std(cls, value: list[float]) -> list[float]:
        if any(v == 0 for v in value):
            raise ValueError("std values must be non-zero")
        return value


class DataSpec(_Strict):
    data: str | None = Field(None, description=".npz/.npy file, or a folder of images")
    samples: int | None = Field(None, ge=1, description="how many samples to use (default: all)")
    seed: int = Field(0, description="seed of the sample draw")
    input: str | None = Field(None, description="the model input a .npy file or image folder feeds")
    preprocess: Preprocess | None = None


class CalibrationSpec(DataSpec):
    samples: int | None = Field(200, ge=1)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    synthetic: bool = Field(False, description="calibrate on random data; accuracy numbers then mean little")


class EvaluationSpec(DataSpec):
    labels: str | None = Field("labels", description="name of the labels array in the .npz")
    metric: str = Field("top1", description="top1 | top5 | mse | fidelity | module:function")
    output: int | str = Field(0, description="which model output the metric reads (index or name)")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in METRICS or (":" in value and all(value.split(":", 1))):
            return value
        raise ValueError(f"metric must be one of {', '.join(METRICS)} or 'module:function'")


class QuantizationSpec(_Strict):
    calibration_method: Literal["minmax", "entropy", "percentile"] | None = None
    per_channel: bool = True
    activation_type: Literal["auto", "uint8", "int8"] = "auto"
    weight_type: Literal["int8", "uint8"] = "int8"
    exclude_nodes: list[str] = Field(default_factory=list, description="node names kept in float")
    op_types: list[str] | None = Field(None, description="only quantize these op types")
    level: Literal["conservative", "balanced", "aggressive"] = Field(
        "balanced", description="conservative: FP16/weight-only where measured faster; balanced: INT8 "
                                "with the most sensitive layers kept in float until the accuracy budget "
                                "is met; aggressive: INT8 wherever measured faster")
    search_time_s: float = Field(120.0, gt=0, description="time budget of the precision search")
    search_samples: int | None = Field(
        None, ge=1, description="evaluation samples the search scores candidates on (default: all)")


TASKS = ("classification", "detection", "embedding", "segmentation", "regression", "sequence")


class DetectionSpec(_Strict):
    """How a detector's outputs decode into boxes, for box F1 against the FP32 model (label-free)."""

    layout: Literal["yolov8", "yolov5", "ssd"] = Field(
        description="yolov8: one [N, 4+classes, anchors] tensor (boxes + class scores); yolov5: "
                    "[N, anchors, 5+classes] with objectness; ssd: separate boxes and scores outputs")
    output: int | str = Field(0, description="the output holding the boxes (index or name)")
    scores_output: int | str | None = Field(None, description="ssd: the output holding the scores")
    box_format: Literal["xywh", "xyxy"] = "xywh"
    channels_first: bool | None = Field(None, description="yolov8: [N, 4+C, A] (true) or [N, A, 4+C] "
                                                          "(false); default: told from the shape")
    conf_threshold: float = Field(0.25, gt=0, lt=1)
    iou_threshold: float = Field(0.45, gt=0, le=1, description="NMS")
    match_iou: float = Field(0.5, gt=0, le=1, description="a box matches the FP32 box at this IoU")


class InputSpec(_Strict):
    shape: list[int | str] = Field(description="dimensions; a string names a dynamic axis")
    dtype: str = "float32"


class BenchmarkSpec(_Strict):
    warmup: int = Field(5, ge=0)
    repeats: int = Field(50, ge=5, description="timed runs per model (interleaved)")
    min_time_s: float = Field(1.0, ge=0, description="keep timing until this much time has passed")
    max_time_s: float = Field(30.0, gt=0)
    threads: int | None = Field(None, ge=1, description="intra-op threads (default: all cores)")


class ModelSpec(_Strict):
    path: str = Field(description="a model file or a glob, relative to the repository root")
    name: str | None = None
    framework: Literal["onnx", "pytorch", "tensorflow"] | None = None
    calibration: str | CalibrationSpec | None = None
    evaluation: EvaluationSpec | None = None
    devices: list[str] | None = None
    quantization: QuantizationSpec | None = None
    task: Literal["auto", "classification", "detection", "embedding", "segmentation", "regression",
                  "sequence"] = Field(
        "auto", description="what the model's outputs mean: decides the label-free fidelity metric "
                            "gated by default (auto: inferred from the graph, and the report says how)")
    detection: DetectionSpec | None = Field(None, description="detectors: how to decode the outputs")
    inputs: dict[str, InputSpec] | None = None
    factory: str | None = Field(
        None, description="PyTorch weights-only checkpoint (state_dict): 'module:function' returning "
                          "the nn.Module, imported from the repository root")
    trust_pickle: bool = Field(
        False, description="allow full unpickling of this PyTorch file (executes code from it; only "
                           "for trusted repositories)")
    trust_custom_objects: bool = Field(
        False, description="Keras: turn safe mode off (Lambda layers, custom objects); SavedModel: "
                           "allow file and Python-callback ops. Only for trusted repositories")
    opset: int | None = Field(None, ge=7, description="ONNX opset of the export (default: the exporter's)")
    export_max_abs_diff: float | None = Field(
        None, gt=0, description="largest allowed |source - ONNX| output difference after export "
                                "(default: 1e-3 x max(1, largest |output|))")
    signature: str | None = Field(None, description="TensorFlow SavedModel signature (default: "
                                                    "serving_default)")

    @field_validator("factory")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        if value is not None and not (":" in value and all(value.split(":", 1))):
            raise ValueError("factory must be 'module:function'")
        return value

    def calibration_spec(self) -> CalibrationSpec | None:
        if isinstance(self.calibration, str):
            return CalibrationSpec(data=self.calibration)
        return self.calibration


class CacheSpec(_Strict):
    enabled: bool = Field(True, description="reuse results of unchanged model x device pairs")
    dir: str | None = Field(None, description="cache folder (default: $EDGEGATE_CACHE_DIR, "
                                              "$XDG_CACHE_HOME/edgegate, or OUT/cache)")


class Config(_Strict):
    version: Literal[1]
    models: list[ModelSpec] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=lambda: ["x86-cpu"],
                               description="devices for models that name none")
    policy: str | None = Field(None, description="policy file overriding the built-in device profiles")
    default_branch: str = "main"
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    quantization: QuantizationSpec = Field(default_factory=QuantizationSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    baseline: Literal["auto", "cache", "off"] = Field(
        "auto", description="compare with the base commit's result: auto (from the cache, else "
                            "computed on the base commit), cache (only if cached), off")
    allow_policy_changes: bool = Field(
        False, description="read from the BASE commit: allow pull requests to loosen policy limits")
