"""Declared input shapes, example feeds, and the check that an export computes what its source does.

Every framework frontend exports to ONNX and then runs both the source model (in its own
framework) and the ONNX export on the same inputs. The largest absolute output difference is
recorded in report.json; beyond the tolerance the model fails with a ConversionError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgegate.errors import ConfigError, ConversionError

BATCH = "batch"          # the name of the dynamic first axis in every export
EXPORT_BATCH = 2         # example batch used to trace (1 would be specialised as a constant)
CHECK_BATCH = 3          # a different batch for the check, so the dynamic axis is exercised
REL_TOLERANCE = 1e-3     # default tolerance: 1e-3 x max(1, largest |output|)
DATA_CHECK_SAMPLES = 64  # evaluation samples compared in the pipeline's check


@dataclass(frozen=True)
class InputDecl:
    name: str
    shape: tuple            # axis 0 is the batch axis (BATCH); the rest are ints
    dtype: str


def declared_inputs(spec, display: str) -> list[InputDecl] | None:
    """The inputs from edgegate.yml (``inputs: {name: {shape, dtype}}``), batch axis made dynamic."""
    if not spec.inputs:
        return None
    out = []
    for name, decl in spec.inputs.items():
        if not decl.shape:
            raise ConfigError(f"input '{name}' has an empty shape", file=display,
                              field=f"inputs.{name}.shape",
                              fix="give the full shape, batch axis first: [batch, 3, 224, 224]")
        rest = decl.shape[1:]
        if any(not isinstance(d, int) or d < 1 for d in rest):
            raise ConfigError(f"input '{name}' has a dynamic axis other than the batch axis",
                              file=display, field=f"inputs.{name}.shape", value=decl.shape,
                              fix="give static sizes for every axis but the first (the batch axis)")
        try:
            np.dtype(decl.dtype)
        except TypeError:
            raise ConfigError(f"input '{name}' has an unknown dtype", file=display,
                              field=f"inputs.{name}.dtype", value=decl.dtype,
                              fix="use a numpy dtype name: float32, int64, uint8, ...") from None
        out.append(InputDecl(name, (BATCH, *rest), decl.dtype))
    return out


def example_feed(inputs: list[InputDecl], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the declared shapes: normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    feed = {}
    for decl in inputs:
        first = decl.shape[0] if isinstance(decl.shape[0], int) else batch
        shape = (first, *decl.shape[1:])
        dtype = np.dtype(decl.dtype)
        if dtype.kind == "f":
            feed[decl.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feed[decl.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            feed[decl.name] = rng.integers(0, 10, shape).astype(dtype)
    return feed


def compare(reference: list[np.ndarray], exported: list[np.ndarray]) -> dict:
    """max |reference - exported| over every output, and the scale it is judged against."""
    if len(reference) != len(exported):
        return {"outputs_source": len(reference), "outputs_onnx": len(exported),
                "max_abs_diff": None}
    max_diff, max_ref = 0.0, 0.0
    for ref, got in zip(reference, exported):
        ref = np.asarray(ref, dtype=np.float64)
        got = np.asarray(got, dtype=np.float64)
        if ref.shape != got.shape:
            if ref.size != got.size:
                return {"shape_source": list(ref.shape), "shape_onnx": list(got.shape),
                        "max_abs_diff": None}
            got = got.reshape(ref.shape)
        if ref.size:
            max_diff = max(max_diff, float(np.max(np.abs(ref - got))))
            max_ref = max(max_ref, float(np.max(np.abs(ref))))
    return {"max_abs_diff": max_diff, "max_abs_output": max_ref}


def judge(result: dict, display: str, limit: float | None, where: str) -> dict:
    """Raise a ConversionError when the export differs beyond the tolerance; else the record."""
    if result.get("max_abs_diff") is None:
        raise ConversionError(f"the ONNX export's outputs do not match the source model's on {where} "
                              f"({ {k: v for k, v in result.items() if k != 'max_abs_diff'} })",
                              file=display,
                              fix="check the output structure; declare 'inputs' in edgegate.yml")
    if not np.isfinite(result["max_abs_diff"]):
        raise ConversionError(f"the ONNX export produces non-finite outputs on {where}", file=display,
                              fix="check the export; try another 'opset' in edgegate.yml")
    tolerance = limit if limit is not None else REL_TOLERANCE * max(1.0, result["max_abs_output"])
    record = {**result, "tolerance": tolerance, "samples": where}
    if result["max_abs_diff"] > tolerance:
        raise ConversionError(
            f"the ONNX export differs from the source model by up to {result['max_abs_diff']:.3g} "
            f"on {where} (tolerance {tolerance:.3g})", file=display, field="export_max_abs_diff",
            value=result["max_abs_diff"],
            fix="the export changed the model's numerics: try another 'opset', static input shapes "
                "in 'inputs', or raise 'export_max_abs_diff' in edgegate.yml if the difference is "
                "acceptable")
    return record


def check_export(source_infer: Callable[[dict], list], onnx_path: Path, inputs: list[InputDecl],
                 display: str, limit: float | None) -> dict:
    """Run the source and the ONNX export on the same seeded batch; the check's record."""
    from edgegate.targets.onnxruntime import OrtRunner

    feed = example_feed(inputs, CHECK_BATCH, seed=1)
    batch = len(next(iter(feed.values()))) if feed else 0
    runner = OrtRunner(onnx_path, None, display)
    try:
        exported = runner.infer(feed)
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime cannot run the export: {str(exc)[:300]}", file=display,
                              fix="try another 'opset' in edgegate.yml, or declare static "
                                  "input shapes in 'inputs'") from None
    reference = source_infer(feed)
    return judge(compare(reference, exported), display, limit,
                 f"a batch of {batch} seeded random samples")


def check_on_data(onnx_path: Path, ref_outputs: list[list[np.ndarray]], dataset, display: str,
                  threads: int | None, limit: float | None) -> dict:
    """The pipeline's check: the ONNX export against the source's own outputs on evaluation data."""
    from edgegate.targets.onnxruntime import OrtRunner

    n = min(len(dataset), DATA_CHECK_SAMPLES)
    if n == 0 or not ref_outputs:
        return {"max_abs_diff": None, "reason": "no evaluation samples"}
    runner = OrtRunner(onnx_path, threads, display)
    worst: dict = {"max_abs_diff": 0.0, "max_abs_output": 0.0}
    for i in range(n):
        got = runner.infer(dataset.feed(i))
        result = compare([out[i] for out in ref_outputs], got)
        if result.get("max_abs_diff") is None:
            worst = result
            break
        worst = {"max_abs_diff": max(worst["max_abs_diff"], result["max_abs_diff"]),
                 "max_abs_output": max(worst["max_abs_output"], result["max_abs_output"])}
    return judge(worst, display, limit, f"the first {n} evaluation samples")


def rename_outputs(model, names: list[str]) -> None:
    """Give an ONNX graph's outputs readable names (tf2onnx writes 'Identity:0')."""
    taken = {i.name for i in model.graph.input} | {init.name for init in model.graph.initializer}
    for output, new in zip(model.graph.output, names):
        old = output.name
        if old == new or not new or new in taken:
            continue
        for node in model.graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]
        output.name = new
        taken.add(new)
