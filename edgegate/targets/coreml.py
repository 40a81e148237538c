"""Core ML (iPhone): an ML program (.mlpackage), FP16 by default; INT8 weights or palettization.

coremltools 7+ no longer converts ONNX. The source is converted instead:
- a PyTorch source (the frontend's SourceModel carrying the torch module): torch.export, then
  ``run_decompositions({})``, then coremltools;
- an ONNX (or TensorFlow) source: ONNX -> TensorFlow SavedModel with onnx2tf (offline, shared with
  the tflite target), then coremltools' TensorFlow 2 converter. The model then takes channels-last
  inputs, and the report says so.

Prediction needs macOS. On Linux the artifact is built, validated (the spec loads; inputs and
outputs match the source) and sized, and latency and accuracy are reported as not measurable here.
On macOS the same code measures them with ``MLModel.predict``.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np

from edgegate._deps import require, version_of
from edgegate.errors import ConversionError, InputError
from edgegate.targets.base import CompileJob, Compiled, binding_of, host_machine, names_of, perms_of
from edgegate.targets.onnx_to_tf import quiet

NOT_MACOS = "Core ML prediction needs macOS (coremltools on Linux builds and validates only)"
COMPRESSION = {"none": None, "int8": ("linear", 8), "palettize-8bit": ("kmeans", 8),
               "palettize-6bit": ("kmeans", 6), "palettize-4bit": ("kmeans", 4)}


def _ct():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("coremltools", extra="coreml")


def can_predict() -> bool:
    return platform.system() == "Darwin"


class CoreMLRunner:
    """MLModel.predict behind ``infer(feed)`` in the ONNX layout (macOS only)."""

    def __init__(self, path: Path, threads: int | None = None, display: str = "",
                 input_perms: dict | None = None, names: dict | None = None):
        if not can_predict():
            raise InputError(NOT_MACOS, file=display, fix="run this device's job on a macOS runner")
        ct = _ct()
        try:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.ALL)
        except Exception as exc:
            raise InputError(f"Core ML cannot load {path.name}: {str(exc)[:300]}", file=display,
                             fix="check the macOS version supports the model's deployment target") from None
        spec = self.model.get_spec()
        self.inputs = [i.name for i in spec.description.input]
        self.outputs = [o.name for o in spec.description.output]
        self.perms = input_perms or {}
        self.names = names or {}                       # ONNX input name -> Core ML input name
        self.measurement = {"runtime": "coreml", "runtime_version": platform.mac_ver()[0],
                            "provider": "Core ML (compute units: ALL)", "threads": threads,
                            "machine": host_machine(), "where": "host",
                            "device_note": "measured on this Mac with Core ML, not on an iPhone"}

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        data = {}
        for i, (name, x) in enumerate(feed.items()):
            perm = self.perms.get(name)
            x = np.asarray(x, dtype=np.float32)
            if perm is not None and x.ndim == len(perm):
                x = x.transpose(perm)
            data[self.names.get(name, self.inputs[min(i, len(self.inputs) - 1)])] = x
        out = self.model.predict(data)
        return [np.asarray(out[n]) for n in self.outputs]


def torch_module(source):
    """The torch module a PyTorch frontend left on the SourceModel, if any (never imports torch)."""
    if source is None or "torch" not in sys.modules:
        return None
    import torch

    candidates = [getattr(source, "module", None), getattr(source, "model", None),
                  (getattr(source, "details", None) or {}).get("module"),
                  getattr(getattr(source, "reference", None), "module", None),
                  getattr(getattr(source, "reference", None), "model", None)]
    return next((c for c in candidates if isinstance(c, (torch.nn.Module, torch.export.ExportedProgram))),
                None)


class CoreMLTarget:
    id = "coreml"

    def runner(self, path: Path, threads: int | None = None, display: str = "",
               binding: dict | None = None) -> CoreMLRunner:
        return CoreMLRunner(path, threads, display, perms_of(binding), names_of(binding))

    def compile(self, job: CompileJob) -> Compiled:
        profile = job.device.profile
        precision = profile.precision or "fp16"
        if precision not in ("fp16", "fp32"):
            raise ConversionError(f"the coreml target has no '{precision}' recipe here "
                                  "(activation INT8 needs macOS calibration)", file=job.display,
                                  field=f"devices.{job.device.id}.precision", value=precision,
                                  fix="use precision: fp16 with weight_compression: int8 or palettize-*")
        compression = profile.weight_compression or "none"
        with quiet(job.workdir / "coremltools.log"):      # its import prints Linux warnings
            ct = _ct()
        notes: list[str] = []
        module = torch_module(job.source)
        perms: dict = {}
        if module is not None:
            path_label = "PyTorch source: torch.export + run_decompositions, then coremltools"
            convert = lambda prec: self._from_torch(ct, module, job, prec)  # noqa: E731
        else:
            from edgegate.targets.onnx_to_tf import convert as onnx2tf

            conv = onnx2tf(job.model_path, job.workdir.parent, job.info.inputs, None,
                           display=job.display)
            perms = {k: v for k, v in conv.input_perms.items() if v}
            path_label = (f"ONNX -> TensorFlow SavedModel (onnx2tf {conv.onnx2tf_version}), then "
                          "coremltools' TensorFlow converter (coremltools 7+ does not read ONNX)")
            convert = lambda prec: self._from_tf(ct, conv.folder, job, prec)  # noqa: E731
        label = precision + ("" if compression == "none" else f"-w{compression}")
        artifact = job.workdir / f"{job.name}.{job.device.id}.{label}.mlpackage"
        shutil.rmtree(artifact, ignore_errors=True)
        with quiet(job.workdir / "coremltools.log"):       # progress bars go to the log
            model = convert(precision)
            if COMPRESSION[compression] is not None:
                model = _compress(ct, model, compression, job.display)
            model.save(str(artifact))
        validation = validate(artifact, job, perms)
        names = validation.pop("input_names")
        notes.append(f"Core ML ML program ({path_label}); compute precision {precision}"
                     + ("" if compression == "none" else f", weights {compression}"))
        if perms:
            notes.append("the Core ML model takes channels-last inputs (" +
                         ", ".join(f"{k}: transpose{list(v)}" for k, v in perms.items()) +
                         "); the iOS app must feed that layout")
        notes.append("validated here: the spec loads and its inputs and outputs match the source "
                     f"({validation['inputs']} in, {validation['outputs']} out)")
        quant = {"method": "coremltools " + (version_of("coremltools") or "?"),
                 "precision": precision, "weight_compression": compression,
                 "activation_type": "float16" if precision == "fp16" else "float32",
                 "kept_in_float": [], "validation": validation}
        baseline = None
        measurable = can_predict()
        if measurable:
            baseline = job.workdir / f"{job.name}.{job.device.id}.fp32-baseline.mlpackage"
            shutil.rmtree(baseline, ignore_errors=True)
            with quiet(job.workdir / "coremltools.log"):
                convert("fp32").save(str(baseline))
        return Compiled(artifact=artifact, precision=label, format="mlpackage", baseline=baseline,
                        quantization=quant, notes=notes, measurable=measurable,
                        not_measurable_reason=None if measurable else NOT_MACOS,
                        input_binding=binding_of(perms, names))

    @staticmethod
    def _precision(ct, precision: str):
        return ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32

    def _from_tf(self, ct, saved_model: Path, job: CompileJob, precision: str):
        try:
            return ct.convert(str(saved_model), source="tensorflow", convert_to="mlprogram",
                              compute_precision=self._precision(ct, precision),
                              minimum_deployment_target=ct.target.iOS16)
        except Exception as exc:
            raise ConversionError(f"coremltools could not convert the TensorFlow form of the model: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}", file=job.display,
                                  fix="provide the PyTorch source model (framework: pytorch) so Core ML "
                                      "converts from it directly") from None

    def _from_torch(self, ct, module, job: CompileJob, precision: str):
        import torch

        example = tuple(torch.from_numpy(np.asarray(v)) for v in job.calibration.feed(0).values())
        try:
            if isinstance(module, torch.export.ExportedProgram):
                program = module.run_decompositions({})
            else:
                try:
                    module.eval()
                except NotImplementedError:       # an unlifted torch.export module is eval already
                    pass
                program = torch.export.export(module, example).run_decompositions({})
            inputs = [ct.TensorType(name=name, shape=tuple(x.shape))
                      for name, x in zip(job.calibration.feed(0), example)]
            return ct.convert(program, inputs=inputs, convert_to="mlprogram",
                              compute_precision=self._precision(ct, precision),
                              minimum_deployment_target=ct.target.iOS16)
        except Exception as exc:
            raise ConversionError(f"coremltools could not convert the PyTorch model: "
                                  f"{type(exc).__name__}: {str(exc)[:300]}", file=job.display,
                                  fix="make the model torch.export-able (no data-dependent control "
                                      "flow), or replace the unsupported op") from None


def _compress(ct, model, compression: str, display: str):
    from coremltools.optimize.coreml import (OpLinearQuantizerConfig, OpPalettizerConfig,
                                             OptimizationConfig, linear_quantize_weights,
                                             palettize_weights)

    mode, bits = COMPRESSION[compression]
    try:
        if mode == "linear":
            cfg = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric"))
            return linear_quantize_weights(model, cfg)
        cfg = OptimizationConfig(global_config=OpPalettizerConfig(mode="kmeans", nbits=bits))
        return palettize_weights(model, cfg)
    except Exception as exc:
        raise ConversionError(f"Core ML weight compression '{compression}' failed: "
                              f"{type(exc).__name__}: {str(exc)[:300]}", file=display,
                              fix="use weight_compression: none or int8") from None


def validate(path: Path, job: CompileJob, perms: dict) -> dict:
    """The saved .mlpackage's spec loads and its inputs/outputs match the source model."""
    from edgegate.targets.onnx_to_tf import channels_last_perm

    ct = _ct()
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as exc:
        raise ConversionError(f"the saved Core ML model does not load: {str(exc)[:300]}",
                              file=job.display, fix="report this as a bug with the model") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise ConversionError("the Core ML model is not an ML program", file=job.display,
                              fix="report this as a bug")
    ins, outs = list(spec.description.input), list(spec.description.output)
    src_in, src_out = job.info.inputs, job.info.outputs
    problems = []
    if len(ins) != len(src_in):
        problems.append(f"{len(ins)} inputs, the source has {len(src_in)}")
    if len(outs) != len(src_out):
        problems.append(f"{len(outs)} outputs, the source has {len(src_out)}")
    names = {}
    for cm, src in zip(ins, src_in):
        names[src.name] = cm.name
        want = _expected(src.shape, perms.get(src.name))
        if not _same(list(cm.type.multiArrayType.shape), want):
            problems.append(f"input {cm.name} has shape {list(cm.type.multiArrayType.shape)}, "
                            f"expected {want}")
    layout_notes = []
    for cm, src in zip(outs, src_out):
        got = list(cm.type.multiArrayType.shape)
        if not got or _same(got, _expected(src.shape, None)):
            continue
        if _same(got, _expected(src.shape, channels_last_perm(len(src.shape)))):
            layout_notes.append(f"output {cm.name} is channels-last")
        else:
            problems.append(f"output {cm.name} has shape {got}, the source has {list(src.shape)}")
    if problems:
        raise ConversionError("the Core ML model does not match the source: " + "; ".join(problems),
                              file=job.display, fix="provide the PyTorch source model, or report "
                                                    "the model as a conversion bug")
    ops = [op.type for f in spec.mlProgram.functions.values()
           for blk in f.block_specializations.values() for op in blk.operations]
    return {"spec_version": spec.specificationVersion, "inputs": len(ins), "outputs": len(outs),
            "ops": len(ops), "op_types": sorted(set(ops) - {"const"}), "layout_notes": layout_notes,
            "input_names": names}


def _expected(shape: tuple, perm) -> list:
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if dims and dims[0] is None:
        dims[0] = 1
    return [dims[i] for i in perm] if perm and len(perm) == len(dims) else dims


def _same(got: list, want: list) -> bool:
    return len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want))
