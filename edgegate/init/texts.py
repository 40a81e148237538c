"""The files `edgegate init` writes: edgegate.yml, the policy stub, the workflow, the .gitignore
lines. Plain text with comments (a YAML dump would drop them); tests load each with the project's
own loaders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from edgegate.config.load import ResolvedDevice
from edgegate.config.policy_schema import FIDELITY_LIMITS, LIMITS
from edgegate.data.sources import TensorSpec
from edgegate.init.found import DataChoice, FoundModel

from edgegate.config.files import CONFIG, OUT_DIR, POLICY

WORKFLOW = ".github/workflows/edgegate.yml"
# Run outputs (report, artifacts, cache, bundle) are ignored; the policy in .edgegate/ is committed.
GITIGNORE_LINES = (f"/{OUT_DIR}/",)
EXTRA_OF = {"pytorch": "pytorch", "tensorflow": "tensorflow"}


def scalar(text: str) -> str:
    """``text`` as a YAML scalar: plain when YAML reads it back as the same string, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_./+@-]*", text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def _dims(spec: TensorSpec) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) and d > 0 else (d or "?")
                           for d in spec.shape) + "]"


def _sample_shape(spec: TensorSpec) -> str:
    dims = [str(d) if isinstance(d, int) and d > 0 else (d or "?") for d in spec.shape[1:]]
    return "(" + ", ".join(["samples", *dims]) + ")"


def first_ready(models: list[FoundModel]) -> FoundModel:
    """The model to try first: one whose inputs are known, else the first."""
    return next((m for m in models if m.inputs is not None), models[0])


def describe_inputs(model: FoundModel) -> str:
    if model.inputs is None:
        return model.note or "inputs not read"
    return "inputs: " + ("; ".join(f"{i.name} {i.dtype} {_dims(i)}" for i in model.inputs) or "none")


def _inputs_line(model: FoundModel) -> list[str]:
    if model.inputs is not None:
        if not model.inputs:
            return ["    # the graph declares no inputs"]
        return ["    # inputs (read from the graph): "
                + "; ".join(f"{i.name} {i.dtype} {_dims(i)}" for i in model.inputs)]
    lines = [f"    # {model.note}." if model.note else "    # inputs not read."]
    extra = EXTRA_OF.get(model.framework)
    if extra:
        lines.append(f'    # Loading it needs: pip install "edgegate-ci[{extra}]"')
    if model.kind == "torchscript":
        lines += ["    # Fill in each input's shape (axis 0 is the batch axis) and uncomment:",
                  "    # inputs:",
                  "    #   input: {shape: [batch, 3, 224, 224], dtype: float32}"]
    elif model.kind == "checkpoint":
        lines += ["    # Fill in the module:function (in this repository) that returns the nn.Module,",
                  "    # and each input's shape (axis 0 is the batch axis), and uncomment:",
                  '    # factory: "nets.model:build"',
                  "    # inputs:",
                  "    #   input: {shape: [batch, 3, 224, 224], dtype: float32}"]
    elif model.kind == "unreadable":
        lines.append("    # Run 'edgegate init --force' again once the file is readable, or fill in the data below.")
    return lines


def _data_lines(model: FoundModel, data: DataChoice) -> list[str]:
    stem = Path(model.path).stem
    if data.calibration is None and data.evaluation is None:
        arrays = (", ".join(f"'{i.name}' {_sample_shape(i)} {i.dtype}" for i in model.inputs)
                  if model.inputs else "one array per model input, named after the input")
        return [
            "    # No data files found for this model. Until you add some, calibration uses random",
            "    # inputs and accuracy is not measured (the report says so, and its numbers mean little).",
            "    # Create these files (numpy.savez), then replace the 'calibration' line below with:",
            _pad(f"    #   calibration: data/{stem}-calibration.npz", arrays, 52),
            "    #   evaluation:",
            _pad(f"    #     data: data/{stem}-evaluation.npz", "the same arrays plus 'labels'", 52),
            "    #     labels: labels",
            _pad("    #     metric: top1", "top1 | top5 | mse | fidelity | module:function", 52),
            "    calibration: {synthetic: true}",
        ]
    lines = []
    checked = "" if data.checked else " (not checked against the model's inputs)"
    if data.calibration is not None:
        lines.append(f"    calibration: {scalar(data.calibration)}   # found: "
                     f"{data.calibration_what}{checked}")
    else:
        lines.append("    # no calibration file found: calibration samples are drawn from the evaluation")
        lines.append("    # set below and left out of the evaluation (the report says so)")
    if data.evaluation is not None:
        lines += ["    evaluation:",
                  f"      data: {scalar(data.evaluation)}   # found: {data.evaluation_what}{checked}"]
        if data.labels is not None:
            lines.append(f"      labels: {scalar(data.labels)}")
        why = {"top1": "integer labels: top-1 accuracy",
               "mse": "float labels: mean squared error",
               "fidelity": "no usable labels: agreement with the FP32 model only"}[data.metric or "fidelity"]
        lines.append(f"      metric: {data.metric or 'fidelity'}   # {why} (top1 | top5 | mse | "
                     "fidelity | module:function)")
    else:
        lines.append("    # no evaluation file found: accuracy is not measured, fidelity is measured on the")
        lines.append("    # calibration samples. Add one with the same arrays plus 'labels':")
        lines.append("    # evaluation: {data: data/" + stem + "-evaluation.npz, labels: labels, metric: top1}")
    if data.others:
        lines.append("    # other data files that fit: " + ", ".join(data.others))
    return lines


def config_text(models: list[tuple[FoundModel, DataChoice]], devices: list[str],
                other_devices: list[str]) -> str:
    lines = [
        "# EdgeGate configuration, written by `edgegate init`: which models to gate, with which data,",
        "# on which devices. Every key is described in EdgeGate's docs/configuration.md;",
        "# `edgegate schema --out DIR` writes the JSON schema editors complete the keys from.",
    ]
    if models:
        lines.append(f"# Try it now: edgegate run {scalar(first_ready([m for m, _ in models]).path)}")
    lines += ["# On pull requests the workflow in .github/workflows/edgegate.yml gates the models they change.",
              "version: 1"]
    if not models:
        lines += [
            "models: []",
            "# No model files were found (.onnx, .pt/.pth/.pt2/.ptl/.bin, .keras/.h5/.hdf5, SavedModel",
            "# folders). Add one entry per model (a glob works too):",
            "# models:",
            "#   - path: models/classifier.onnx",
            "#     calibration: data/calibration.npz      # arrays named after the model's inputs",
            "#     evaluation:",
            "#       data: data/evaluation.npz            # the same arrays plus a labels array",
            "#       labels: labels",
            "#       metric: top1",
        ]
    else:
        lines.append("models:")
        for model, data in models:
            lines.append(f"  - path: {scalar(model.path)}")
            lines += _inputs_line(model)
            lines += _data_lines(model, data)
    lines.append("devices: [" + ", ".join(devices) + "]   # for models that name none; `edgegate targets`"
                 " lists each")
    if other_devices:
        lines.append("# built-in devices: " + ", ".join(other_devices))
    lines += [f"policy: {POLICY}   # this repository's limits on top of the built-in device profiles",
              ""]
    return "\n".join(lines)


# shown, commented out, for limits a built-in profile does not set
EXAMPLE_LIMITS = {"max_accuracy_drop_pp": 1.0, "min_speedup": 1.5, "max_size_mb": 50,
                  "max_latency_p50_ms": 20, "min_size_ratio": 3.0, "min_top1_agreement": 0.99,
                  "min_sqnr_db": 20, "min_box_f1": 0.95, "min_cosine_similarity": 0.99,
                  "min_mask_iou": 0.9, "max_memory_mb": 256, "max_memory_growth_pct": 10,
                  "max_load_time_ms": 500, "max_latency_p99_ms": 40, "min_throughput_ips": 50,
                  "max_energy_mj": 50}


def _value(v: float) -> str:
    return f"{v:g}"


def _pad(text: str, comment: str, width: int = 36) -> str:
    return f"{text.ljust(width)} # {comment}"


def policy_text(devices: list[ResolvedDevice]) -> str:
    lines = [
        "# EdgeGate policy, written by `edgegate init`: this repository's overrides of the built-in",
        "# device profiles. Each device below starts as its built-in profile: uncomment a limit to",
        "# change it, set one to null to remove it; a device of your own needs a 'target'.",
        "# Limits are read from a pull request's BASE commit: a pull request that loosens one fails",
        "# unless the base's edgegate.yml says allow_policy_changes: true.",
        "version: 1",
        "devices:",
    ]
    for device in devices:
        lines.append(f"  {device.id}:")
        lines.append(_pad(f"    target: {device.target}", "as in the built-in profile"))
        for name in LIMITS:
            limit = device.limits.get(name)
            if limit is None:
                lines.append(_pad(f"    # {name}: {_value(EXAMPLE_LIMITS[name])}",
                                  "not in the built-in profile (an example value)"))
                continue
            note = "built-in"
            if name in FIDELITY_LIMITS:
                note += ": gates the models of its task; set here, it gates every model"
            lines.append(_pad(f"    # {name}: {_value(limit.value)}", note))
    lines.append("")
    return "\n".join(lines)


def example_workflow() -> Path:
    """EdgeGate's example workflow (examples/workflows/edgegate.yml; packaged in the wheel)."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_workflows" / "edgegate.yml"
    return packaged if packaged.is_file() else here.parent / "examples" / "workflows" / "edgegate.yml"


def workflow_text() -> str:
    """The example workflow as it is (permissions, pinned actions, fetch-depth: 0, no paths filter:
    a required check must run on every pull request), with a line saying where it came from."""
    return ("# Written by `edgegate init` from EdgeGate's examples/workflows/edgegate.yml.\n"
            + example_workflow().read_text(encoding="utf-8"))
