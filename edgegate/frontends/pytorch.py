"""PyTorch models -> ONNX, loaded without unpickling arbitrary objects.

Supported: TorchScript archives (torch.jit.save), torch.export programs (.pt2) and weights-only
checkpoints (a state_dict) with a model factory named in edgegate.yml. A pickled nn.Module (or
any checkpoint that needs a full unpickler) is refused unless the model sets ``trust_pickle``.

Loading TorchScript runs TorchScript code from the archive in TorchScript's interpreter (not
Python; it cannot import modules or open files); its constants are read by TorchScript's own
restricted unpickler.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from edgegate._deps import require
from edgegate.errors import ConfigError, ConversionError, InputError, UnsafeInputError
from edgegate.frontends import SourceModel
from edgegate.frontends.export_check import (BATCH, EXPORT_BATCH, InputDecl, check_export,
                                             declared_inputs, example_feed)
from edgegate.frontends.onnx import MAX_MODEL_BYTES
from edgegate.frontends.torch_archive import (CHECKPOINT, EXPORTED_PROGRAM, TORCHSCRIPT, safe_pt2_copy,
                                              inspect)

TRUST_FIX = ("if this repository is trusted, set 'trust_pickle: true' on the model in edgegate.yml; "
             "otherwise save only the weights (torch.save(model.state_dict(), ...)) and name a "
             "'factory: module:function' that builds the model, or save TorchScript "
             "(torch.jit.save) or a torch.export program (torch.export.save)")
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


class TorchReference:
    """The source model run by PyTorch itself."""

    def __init__(self, module, input_names: list[str]):
        self.module = module
        self.input_names = input_names

    def infer(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self.input_names]
        with torch.no_grad():
            out = self.module(*args)
        leaves = torch.utils._pytree.tree_leaves(out)
        return [t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
                for t in leaves]


@contextlib.contextmanager
def _weights_only_everywhere():
    """Make every torch.load inside (including torch.export.load's own) weights-only."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def _refused_global(exc: BaseException) -> str | None:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc)) or re.search(r"Unsupported global: ([\w.]+)", str(exc))
    return found.group(1) if found else None


def load_checkpoint(path: Path, display: str, trust_pickle: bool):
    """torch.load with weights_only=True; a full unpickler only when the repository opts in."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights-only refusals are pickle.UnpicklingError; corrupt files vary
        text = str(exc)
        refused = "weights_only" in text.lower() or "unsupported global" in text.lower() or \
            isinstance(exc, __import__("pickle").UnpicklingError)
        if not refused:
            raise InputError(f"cannot read the checkpoint: {type(exc).__name__}: {text[:200]}",
                             file=display, fix="re-save it with torch.save") from None
        if not trust_pickle:
            what = _refused_global(exc)
            raise UnsafeInputError(
                "refused to load: the file needs a full unpickler"
                + (f" (it references '{what}')" if what else "")
                + ", and unpickling executes code from the file (a pickled nn.Module, or an "
                  "object that is not plain tensors)", file=display, fix=TRUST_FIX) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(str(path), map_location="cpu", weights_only=False)


def import_factory(ref: str, root: Path, display: str):
    """``module:function`` from a Python file in the repository (code the repository's
    configuration names); a standard-library or installed module is refused before import."""
    from edgegate.trust.repo_code import import_reference

    return import_reference(ref, root, field="factory", display=display)


def _state_dict_of(obj, display: str) -> dict:
    import torch

    def is_sd(d) -> bool:
        return isinstance(d, dict) and d and all(isinstance(v, torch.Tensor) for v in d.values())

    if is_sd(obj):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if is_sd(obj.get(key)):
                return obj[key]
    keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise InputError("the checkpoint holds no state_dict (a dict of tensors)", file=display,
                     value=keys, fix="save model.state_dict(), or a dict with it under "
                                     "'state_dict' or 'model'")


def _module_from_checkpoint(path: Path, display: str, spec, root: Path):
    import torch

    obj = load_checkpoint(path, display, spec.trust_pickle)
    if isinstance(obj, torch.nn.Module):
        if spec.factory is None:
            return obj, "torch.load (trusted full unpickling)"
        obj = obj.state_dict()
    if not spec.factory:
        raise ConfigError("a weights-only checkpoint needs the model's code to build the network",
                          file=display, field="factory",
                          fix="add 'factory: module:function' to this model in edgegate.yml (a "
                              "function in the repository that returns the nn.Module) and declare "
                              "'inputs'")
    module = import_factory(spec.factory, root, display)()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"the factory '{spec.factory}' returned a {type(module).__name__}, "
                          "not an nn.Module", file=display, field="factory",
                          fix="return the (untrained) nn.Module")
    try:
        module.load_state_dict(_state_dict_of(obj, display), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"the checkpoint does not fit the factory's model: "
                         f"{' '.join(first[1:3])[:400] or first[0]}", file=display, field="factory",
                         fix="check that the factory builds the architecture the weights were "
                             "trained with") from None
    return module, f"torch.load(weights_only=True) + factory {spec.factory}"


def _program_inputs(ep, display: str) -> list[InputDecl]:
    """Input names and shapes carried by a torch.export program."""
    import torch

    user = list(ep.graph_signature.user_inputs)
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    decls = []
    for name in user:
        val = placeholders[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise ConversionError(f"input '{name}' of the program is not a tensor", file=display,
                                  fix="export a program whose inputs are tensors")
        dims = []
        for axis, dim in enumerate(val.shape):
            if isinstance(dim, int):
                dims.append(dim)
            elif axis == 0:
                dims.append(BATCH)
            else:
                raise ConversionError(f"input '{name}' has a dynamic axis {axis} ({dim})",
                                      file=display, fix="declare static sizes in 'inputs' in "
                                                        "edgegate.yml, or export with static shapes")
        decls.append(InputDecl(name, tuple(dims), str(val.dtype).replace("torch.", "")))
    return decls


def _unsupported_op(text: str) -> str | None:
    found = re.search(r"\b(aten|prim|quantized|torchvision)(::|\.)[A-Za-z_][\w.]*", text)
    return found.group(0) if found else None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("-")]
    text = next((ln for ln in lines if "rror" in ln or "nsupported" in ln or "not supported" in ln),
                lines[0] if lines else type(exc).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[:300]


class _ScriptModule(Exception):
    """The dynamo exporter does not take TorchScript modules."""


def export_onnx(model, args: tuple, inputs: list[InputDecl], out: Path, opset: int | None,
                dynamic: bool, display: str) -> tuple[str, list[str]]:
    """torch.onnx (dynamo) with a dynamic batch axis; the legacy exporter if that fails."""
    import torch

    names = [d.name for d in inputs]
    notes: list[str] = []
    dyn_batch = torch.export.Dim(BATCH, min=1)
    dynamic_shapes = tuple({0: dyn_batch} for _ in inputs) if dynamic else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        try:
            if isinstance(model, torch.jit.ScriptModule):
                raise _ScriptModule()
            torch.onnx.export(model, args, str(out), input_names=names, dynamic_shapes=dynamic_shapes,
                              opset_version=opset, external_data=False, dynamo=True, verbose=False)
            return "torch.onnx (dynamo)", notes
        except Exception as exc:
            dynamo_error = exc
        if isinstance(model, torch.export.ExportedProgram):
            model = model.module()
        if isinstance(dynamo_error, _ScriptModule):
            notes.append("TorchScript is exported with the legacy TorchScript-based exporter (the "
                         "dynamo exporter does not take ScriptModules)")
        else:
            notes.append(f"the dynamo exporter failed ({_first_line(dynamo_error)}); used the "
                         "legacy TorchScript-based exporter")
        axes = {n: {0: BATCH} for n in names} if dynamic else None
        try:
            torch.onnx.export(model, args, str(out), input_names=names, dynamic_axes=axes,
                              opset_version=opset or 17, dynamo=False)
            return "torch.onnx (legacy TorchScript exporter)", notes
        except Exception as exc:
            legacy_error = exc
    op = _unsupported_op(str(legacy_error)) or _unsupported_op(str(dynamo_error))
    raise ConversionError(
        "cannot export the model to ONNX" + (f": unsupported op {op}" if op else "")
        + (f" ({_first_line(legacy_error)})" if isinstance(dynamo_error, _ScriptModule) else
           f" (dynamo: {_first_line(dynamo_error)}; legacy: {_first_line(legacy_error)})"),
        file=display,
        fix=(f"set a newer 'opset' in edgegate.yml or replace {op} in the model" if op else
             "set 'opset' in edgegate.yml, declare static 'inputs', or remove data-dependent "
             "control flow (torch.cond) from forward()"))


def _outputs_renamed(path: Path) -> None:
    import onnx

    from edgegate.frontends.export_check import rename_outputs

    model = onnx.load(str(path))
    outs = len(model.graph.output)
    names = ["output"] if outs == 1 else [f"output_{i}" for i in range(outs)]
    rename_outputs(model, names)
    onnx.save(model, str(path))


def _opset_of(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


class PyTorchFrontend:
    id = "pytorch"

    def load(self, path: Path, display: str, spec, workdir: Path, root: Path) -> SourceModel:
        torch = require("torch", extra="pytorch")
        require("onnxscript", extra="pytorch")
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise InputError(f"the model is {size} bytes, over the {MAX_MODEL_BYTES}-byte limit",
                             file=display, fix="raise the limit only for trusted repositories")
        file = inspect(path, display)
        declared = declared_inputs(spec, display)
        notes: list[str] = []
        if file.kind == EXPORTED_PROGRAM:
            # Untrusted: PyTorch reads a copy that holds raw tensors and JSON only.
            source = path if spec.trust_pickle else safe_pt2_copy(path, display,
                                                                  workdir / "safe-program.pt2")
            try:
                guard = contextlib.nullcontext() if spec.trust_pickle else _weights_only_everywhere()
                with guard, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    program = torch.export.load(str(source))
            except Exception as exc:
                if _refused_global(exc) or "weights_only" in str(exc).lower():
                    raise UnsafeInputError("the .pt2 archive holds pickled objects that are not "
                                           "plain tensors; unpickling them executes code",
                                           file=display, fix=TRUST_FIX) from None
                raise InputError(f"cannot load the torch.export program: {_first_line(exc)}",
                                 file=display, fix="re-save it with torch.export.save from torch "
                                                   f"{torch.__version__.split('+')[0]}") from None
            inputs = _program_inputs(program, display)
            if declared:
                if len(declared) != len(inputs):
                    raise ConfigError(f"'inputs' declares {len(declared)} inputs; the program has "
                                      f"{len(inputs)}", file=display, field="inputs",
                                      fix="declare one entry per forward() argument, in order")
                inputs = [InputDecl(d.name, i.shape, i.dtype) for d, i in zip(declared, inputs)]
            module = program.module()
            exportable, loaded_by, dynamic = program, "torch.export.load (weights-only)", False
            if inputs and all(isinstance(d.shape[0], int) for d in inputs):
                notes.append(f"the program was exported with a static batch of {inputs[0].shape[0]}: "
                             "the ONNX export keeps it (export with a dynamic batch Dim to change "
                             "that)")
        else:
            if file.kind == TORCHSCRIPT:
                try:
                    module = torch.jit.load(str(path), map_location="cpu")
                except Exception as exc:
                    raise InputError(f"cannot load the TorchScript archive: {_first_line(exc)}",
                                     file=display, fix="re-save it with torch.jit.save") from None
                loaded_by = "torch.jit.load (TorchScript)"
            else:
                module, loaded_by = _module_from_checkpoint(path, display, spec, root)
            if declared is None:
                raise ConfigError("the input shapes of this model are not in the file",
                                  file=display, field="inputs",
                                  fix="declare them on the model in edgegate.yml, e.g. 'inputs: "
                                      "{input: {shape: [batch, 1, 32, 32], dtype: float32}}'")
            inputs, exportable, dynamic = declared, module, True
        if file.kind != EXPORTED_PROGRAM:
            module.eval()
        reference = TorchReference(module, [d.name for d in inputs])
        example = example_feed(inputs, EXPORT_BATCH, seed=0)
        args = tuple(torch.from_numpy(example[d.name]) for d in inputs)
        try:
            reference.infer(example)
        except Exception as exc:
            raise InputError(f"the model does not run on inputs of the declared shapes: "
                             f"{_first_line(exc)}", file=display, field="inputs",
                             value={d.name: list(d.shape) for d in inputs},
                             fix="declare the shapes forward() expects in 'inputs'") from None
        out = workdir / "source.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        exporter, export_notes = export_onnx(exportable, args, inputs, out, spec.opset, dynamic,
                                             display)
        notes += export_notes
        _outputs_renamed(out)
        check = check_export(reference.infer, out, inputs, display, spec.export_max_abs_diff)
        opset = _opset_of(out)
        return SourceModel(
            onnx_path=out, framework="pytorch", framework_version=torch.__version__,
            export=f"{loaded_by} -> {exporter}, opset {opset}",
            reference=reference,
            details={"kind": file.kind, "loaded_by": loaded_by, "exporter": exporter,
                     "opset": opset, "inputs": {d.name: {"shape": list(d.shape), "dtype": d.dtype}
                                                for d in inputs},
                     "check_random": check, "notes": notes})
