"""What kind of PyTorch file this is, told from its zip layout without unpickling anything.

- TorchScript (``torch.jit.save``): ``<root>/code/...`` and ``<root>/constants.pkl``.
- torch.export program (``torch.export.save``, .pt2): ``<root>/archive_format`` = "pt2" and
  ``<root>/models/<name>.json``.
- ``torch.save`` checkpoint (a state_dict, or a pickled nn.Module): ``<root>/data.pkl`` only;
  older non-zip ``torch.save`` files start with a pickle opcode.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgegate.errors import InputError, UnsafeInputError
from edgegate.zipbomb import check_zip

TORCHSCRIPT = "torchscript"
EXPORTED_PROGRAM = "exported-program"
CHECKPOINT = "checkpoint"
MAX_UNPACKED_BYTES = 8 << 30

# Parts of a .pt2 archive whose loading runs native code or a full unpickler.
_NATIVE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
_NATIVE_SUFFIXES = (".so", ".dll", ".dylib", ".pyd")
_UNPICKLED_CONSTANTS = ("data/constants/custom_obj_", "data/constants/opaque_obj_")


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


def check_pt2(file: TorchFile, display: str) -> None:
    """Refuse the parts of a .pt2 whose loading would run native code or a full unpickler."""
    for member in file.members:
        if member.startswith(_NATIVE_DIRS) or member.endswith(_NATIVE_SUFFIXES):
            raise UnsafeInputError(
                f"the .pt2 archive holds compiled native code ('{member}'), which loading would run",
                file=display,
                fix="save the program with torch.export.save (no AOTInductor package), or set "
                    "'trust_pickle: true' on this model in edgegate.yml if the repository is trusted")
        if member.startswith(_UNPICKLED_CONSTANTS):
            raise UnsafeInputError(
                f"the .pt2 archive holds a pickled Python object ('{member}'); unpickling it "
                "executes code from the file", file=display,
                fix="export without custom/opaque objects, or set 'trust_pickle: true' on this "
                    "model in edgegate.yml if the repository is trusted")
