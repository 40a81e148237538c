"""What kind of PyTorch file this is, told from its zip layout without unpickling anything.

- TorchScript (``torch.jit.save``): ``<root>/code/...`` and ``<root>/constants.pkl``.
- torch.export program (``torch.export.save``, .pt2): ``<root>/archive_format`` = "pt2" and
  ``<root>/models/<name>.json``.
- ``torch.save`` checkpoint (a state_dict, or a pickled nn.Module): ``<root>/data.pkl`` only;
  older non-zip ``torch.save`` files start with a pickle opcode.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgegate.errors import InputError, UnsafeInputError
from edgegate.trust.zipbomb import check_zip

TORCHSCRIPT = "torchscript"
EXPORTED_PROGRAM = "exported-program"
CHECKPOINT = "checkpoint"
MAX_UNPACKED_BYTES = 8 << 30

# The .pt2 layout (torch/export/pt2_archive/constants.py). Only the "model" program is loaded.
_PROGRAM = "models/model.json"
_WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
_CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_SAMPLE_INPUTS = "data/sample_inputs/model.pt"
_TENSOR_CONSTANT_PREFIX = "tensor_"
_PAYLOAD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_JSON_BYTES = 256 << 20

@dataclass(frozen=True)
class TorchFile:
    kind: str
    members: list[str] = field(default_factory=list)   # zip member names without the root folder


def _strip_root(names: list[str]) -> list[str]:
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(roots) == 1:
        root = roots.pop() + "/"
        return [n[len(root):] if n.startswith(root) else n for n in names]
    return names


def inspect(path: Path, display: str) -> TorchFile:
    if path.is_dir():
        raise InputError("a folder is not a PyTorch model file", file=display,
                         fix="point 'path' at a .pt/.pt2 file")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as fh:
            head = fh.read(2)
        if head[:1] == b"\x80":       # pickle protocol 2+: a legacy torch.save file
            return TorchFile(CHECKPOINT)
        raise InputError("not a PyTorch file (neither a complete torch zip archive nor a pickle; "
                         "corrupt or truncated?)",
                         file=display, fix="save with torch.jit.save, torch.export.save or "
                                           "torch.save(model.state_dict(), ...)")
    check_zip(path, display, MAX_UNPACKED_BYTES)      # declared sizes, before torch reads it
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            members = _strip_root(names)
            fmt = ""
            if "archive_format" in members:
                fmt = zf.read(names[members.index("archive_format")])[:16].decode("ascii", "replace")
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"cannot read the archive: {exc}", file=display,
                         fix="re-save the model; check the file is not truncated") from None
    if fmt.strip() == "pt2" or any(m.startswith("models/") and m.endswith(".json") for m in members):
        return TorchFile(EXPORTED_PROGRAM, members)
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return TorchFile(TORCHSCRIPT, members)
    if "data.pkl" in members:
        return TorchFile(CHECKPOINT, members)
    raise InputError("a zip archive that is neither TorchScript, a torch.export program nor a "
                     "torch.save checkpoint", file=display,
                     fix="save with torch.jit.save, torch.export.save or torch.save(state_dict)")


def _unsafe(what: str, display: str) -> UnsafeInputError:
    return UnsafeInputError(
        f"the .pt2 archive {what}; loading it would unpickle data from the file, which executes "
        "code", file=display,
        fix="export plain tensors only (torch.export.save of a program without custom or opaque "
            "objects, no AOTInductor package), or set 'trust_pickle: true' on this model in "
            "edgegate.yml if the repository is trusted")


def _payloads(config: object, what: str, display: str, tensors_only_prefix: str | None) -> list[str]:
    """The member names a weights/constants config makes the loader read, each checked to be a
    raw tensor payload: anything the loader would unpickle is refused by what the config says,
    not by how a member happens to be named."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise InputError(f"the .pt2 archive's {what} config is not a payload config",
                         file=display, fix="re-save the program with torch.export.save")
    names = []
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            raise InputError(f"the .pt2 archive's {what} entry '{fqn}' is malformed",
                             file=display, fix="re-save the program with torch.export.save")
        name = meta.get("path_name")
        if not isinstance(name, str) or not _PAYLOAD_NAME.fullmatch(name) or name.startswith(".."):
            raise UnsafeInputError(f"the .pt2 archive's {what} '{fqn}' names a payload outside "
                                   f"its folder ({name!r})", file=display,
                                   fix="re-save the program with torch.export.save")
        if tensors_only_prefix is not None and not name.startswith(tensors_only_prefix):
            raise _unsafe(f"holds {what} '{fqn}' as a Python object ('{name}')", display)
        if meta.get("use_pickle") or meta.get("tensor_meta") is None:
            raise _unsafe(f"stores {what} '{fqn}' as a pickle", display)
        names.append(name)
    return names


def safe_pt2_copy(path: Path, display: str, dest: Path) -> Path:
    """Write to ``dest`` a .pt2 that holds only what ``torch.export.load`` needs and nothing it
    would unpickle: the program JSON, the payload configs and the raw tensor payloads they name
    (matched by exact name), and empty sample inputs. Everything else in the file (extra files,
    compiled native code, custom or opaque objects, pickled tensors) never reaches PyTorch.

    PyTorch's zip reader looks members up case-insensitively and through its own root folder,
    so checks on the original's member names cannot be trusted; loading the copy can be."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            members = _strip_root(names)
            by_name = dict(zip(members, names))
            folded: dict[str, str] = {}
            for member in members:
                other = folded.setdefault(member.lower(), member)
                if other != member:
                    raise UnsafeInputError(
                        f"the .pt2 archive holds members whose names differ only in case "
                        f"('{other}', '{member}'); PyTorch's reader cannot tell them apart",
                        file=display, fix="re-save the program with torch.export.save")

            def read(member: str, limit: int | None = None) -> bytes:
                info = zf.getinfo(by_name[member])
                if limit is not None and info.file_size > limit:
                    raise InputError(f"the .pt2 archive's '{member}' is {info.file_size} bytes, "
                                     f"over {limit}", file=display,
                                     fix="re-save the program with torch.export.save")
                return zf.read(info)

            def config(member: str, what: str, prefix: str | None) -> tuple[bytes, list[str]]:
                if member not in by_name:
                    legacy = member.rsplit("/", 1)[0] + "/model.pt"
                    if legacy in by_name:
                        raise _unsafe(f"stores its {what}s in the legacy pickled format "
                                      f"('{legacy}')", display)
                    raise InputError(f"the .pt2 archive has no '{member}'", file=display,
                                     fix="re-save the program with torch.export.save from a "
                                         "current PyTorch")
                raw = read(member, MAX_JSON_BYTES)
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise InputError(f"the .pt2 archive's '{member}' is not JSON", file=display,
                                     fix="re-save the program with torch.export.save") from None
                return raw, _payloads(parsed, what, display, prefix)

            if _PROGRAM not in by_name:
                raise InputError("the .pt2 archive holds no program named 'model' "
                                 f"('{_PROGRAM}')", file=display,
                                 fix="save it with torch.export.save(program, path)")
            records = {"archive_format": b"pt2", "archive_version": b"0",
                       _PROGRAM: read(_PROGRAM, MAX_JSON_BYTES), _SAMPLE_INPUTS: b""}
            for member, what, prefix in ((_WEIGHTS_CONFIG, "weight", None),
                                         (_CONSTANTS_CONFIG, "constant", _TENSOR_CONSTANT_PREFIX)):
                raw, payloads = config(member, what, prefix)
                records[member] = raw
                folder = member.rsplit("/", 1)[0] + "/"
                for name in payloads:
                    if folder + name not in by_name:
                        raise InputError(f"the .pt2 archive's {what} config names "
                                         f"'{folder + name}', which the archive does not hold "
                                         "under that exact name", file=display,
                                         fix="re-save the program with torch.export.save")
                    records[folder + name] = read(folder + name)
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise InputError(f"cannot read the archive: {exc}", file=display,
                         fix="re-save the model; check the file is not truncated") from None

    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = torch._C.PyTorchFileWriter(str(dest))
    writer.set_min_version(6)
    for name, data in records.items():
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    return dest
