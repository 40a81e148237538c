"""What a model is: inputs, outputs, parameters, op counts, MACs per node, control flow."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from edgegate.data.sources import TensorSpec

CONTROL_FLOW = {"If", "Loop", "Scan"}


@dataclass(frozen=True)
class ModelInfo:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    params: int
    op_counts: dict[str, int]
    macs: dict[str, int]                  # node name -> multiply-accumulates (batch 1)
    control_flow: list[str] = field(default_factory=list)
    dynamic_inputs: list[str] = field(default_factory=list)

    @property
    def total_macs(self) -> int:
        return int(sum(self.macs.values()))

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs], "opset": self.opset,
                "params": self.params, "op_counts": dict(sorted(self.op_counts.items())),
                "macs": self.total_macs, "control_flow": self.control_flow,
                "dynamic_inputs": self.dynamic_inputs}


def _dims(type_proto: onnx.TypeProto) -> tuple:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return ()
    dims = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return tuple(dims)


def _dtype(type_proto: onnx.TypeProto) -> str:
    elem = type_proto.tensor_type.elem_type if type_proto.HasField("tensor_type") else 0
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)).name
    except (KeyError, TypeError, ValueError):
        return "float32"


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    init = {i.name for i in model.graph.initializer}
    inputs = [TensorSpec(v.name, _dims(v.type), _dtype(v.type))
              for v in model.graph.input if v.name not in init]
    outputs = [TensorSpec(v.name, _dims(v.type), _dtype(v.type)) for v in model.graph.output]
    return inputs, outputs


def _static(shape: tuple | None) -> list[int] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul nodes (dynamic dims taken as 1)."""
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    shapes: dict[str, tuple] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = _dims(vi.type)
    for init in inferred.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    macs: dict[str, int] = {}
    for i, node in enumerate(inferred.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        try:
            if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
                w_name = node.input[3] if node.op_type == "QLinearConv" else node.input[1]
                w = _static(shapes.get(w_name))
                out_shape = _static(shapes.get(node.output[0]))
                if w and out_shape:
                    if node.op_type == "ConvTranspose":
                        in_shape = _static(shapes.get(node.input[0]))
                        macs[name] = int(np.prod(in_shape) * np.prod(w[1:])) if in_shape else 0
                    else:
                        macs[name] = int(np.prod(out_shape) * np.prod(w[1:]))
            elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
                a_name = node.input[0]
                b_name = node.input[3] if node.op_type == "QLinearMatMul" else node.input[1]
                a, b = _static(shapes.get(a_name)), _static(shapes.get(b_name))
                if a and b:
                    if node.op_type == "Gemm":
                        trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
                        n = b[0] if trans_b else b[-1]
                        macs[name] = int(np.prod(a) * n)
                    else:
                        out = _static(shapes.get(node.output[0]))
                        k = a[-1]
                        macs[name] = int(np.prod(out) * k) if out else int(np.prod(a) * b[-1])
        except (IndexError, ValueError, TypeError):
            continue
    return macs


def analyze(model: onnx.ModelProto) -> ModelInfo:
    inputs, outputs = io_specs(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    params = 0
    for init in model.graph.initializer:
        params += int(np.prod(init.dims)) if init.dims else 1
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    params += int(np.prod(attr.t.dims)) if attr.t.dims else 1
    ops = Counter(n.op_type for n in model.graph.node)
    control = sorted({n.op_type for n in model.graph.node if n.op_type in CONTROL_FLOW})
    dynamic = [t.name for t in inputs if any(not isinstance(d, int) or d <= 0 for d in t.shape)]
    return ModelInfo(inputs, outputs, opset, params, dict(ops), node_macs(model), control, dynamic)


def weights_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
