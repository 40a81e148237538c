"""ONNX models: loaded without running anything, checked, external data kept inside the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from edgegate.errors import InputError, UnsafeInputError
from edgegate.frontends import SourceModel

MAX_MODEL_BYTES = 8 << 30


def safe_load(path: Path, display: str, root: Path | None = None) -> onnx.ModelProto:
    """Parse an ONNX file; external data must sit beside the model, inside ``root``."""
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise InputError(f"the model is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit",
                         file=display, fix="raise the limit only for trusted repositories")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]})",
                         file=display,
                         fix="re-export the model; check that the file is not truncated "
                             "or an un-fetched Git LFS pointer") from None
    if not model.graph.node and not model.graph.output:
        raise InputError("the file parses but holds no graph (empty or not an ONNX model)",
                         file=display, fix="re-export the model")
    base = path.parent.resolve()
    limit = (root or base).resolve()
    for tensor in _external_tensors(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if Path(location).is_absolute() or (target != limit and limit not in target.parents):
            raise UnsafeInputError(
                f"initializer '{tensor.name}' points its external data outside the repository",
                file=display, value=location,
                fix="keep external data files next to the model")
        if not target.is_file():
            raise InputError(f"external data file for '{tensor.name}' is missing", file=display,
                             value=location, fix="commit the .onnx.data file next to the model")
    if any(True for _ in _external_tensors(model)):
        try:
            onnx.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise InputError(f"cannot read external data: {exc}", file=display,
                             fix="re-export the model with its data file") from None
    return model


def _external_tensors(model: onnx.ModelProto):
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and \
                    attr.t.data_location == onnx.TensorProto.EXTERNAL:
                yield attr.t


def check(model: onnx.ModelProto, display: str) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise InputError(f"the ONNX model is invalid: {first}", file=display,
                         fix="re-export it; 'python -m onnx.checker' shows the full report") from None
    except ValueError:
        # a model over 2 GiB cannot be checked in memory; ONNX Runtime will validate it on load
        pass


def save(model: onnx.ModelProto, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > (1 << 31) - (1 << 20)
    onnx.save_model(model, str(out), save_as_external_data=large,
                    location=out.name + ".data" if large else None)
    return out


class OnnxFrontend:
    id = "onnx"

    def load(self, path: Path, display: str, spec, workdir: Path, root: Path) -> SourceModel:
        model = safe_load(path, display, root)
        check(model, display)
        out = workdir / "source.onnx"
        if any(True for _ in _external_tensors(onnx.load(str(path), load_external_data=False))):
            save(model, out)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
        return SourceModel(onnx_path=out, framework="onnx", framework_version=onnx.__version__,
                           export="onnx (as committed)", reference=None)
