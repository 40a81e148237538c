"""The results cache: one model x device result, keyed by everything that produced it.

The key is a sha256 over the model's content, the calibration and evaluation data's content, the
model's configuration, the resolved device profile with its limits (the policy hash), every
toolchain version and the machine that measured it. A hit restores the stored result and its
artifact without loading, converting or compiling anything; the result is re-checked against
the current policy (a pure function) and says which commit measured it.

Layout: ``DIR/<key[:2]>/<key>/entry.json`` and ``DIR/<key[:2]>/<key>/files/<artifact>``. Entries
are written to a temporary folder and renamed into place, so concurrent matrix jobs sharing a
cache never read half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgegate.config.load import ResolvedDevice
from edgegate.config.schema import Config, ModelSpec
from edgegate.trust.paths import safe_path
from edgegate.errors import EdgeGateError
from edgegate.report.model import Artifact, CacheInfo, DeviceResult, ModelReport

CACHE_FORMAT = 2          # 2: results carry peak memory, load time, p99, throughput
MODEL_FIELDS = ("sha256", "size_bytes", "framework", "framework_version", "export", "info", "data",
                "warnings")


def default_cache_dir(config: Config, root: Path, out_dir: Path, override: str | None = None) -> Path:
    """--cache-dir, then edgegate.yml cache.dir, then $EDGEGATE_CACHE_DIR, $XDG_CACHE_HOME/edgegate,
    then OUT/cache."""
    if override:
        return Path(override)
    if config.cache.dir:              # from the repository: it may not write outside it
        return safe_path(root, config.cache.dir, what="cache.dir", field="cache.dir")
    if os.environ.get("EDGEGATE_CACHE_DIR"):
        return Path(os.environ["EDGEGATE_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "edgegate"
    return out_dir / "cache"


def _sha256_file(path: Path, h) -> None:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def content_sha256(path: Path, root: Path | None = None) -> str:
    """A file (with its .data sidecar) or a folder (every file, by relative path and content).
    ``path`` has been through the path guard; with ``root`` the sidecar goes through it too."""
    h = hashlib.sha256()
    if path.is_file():
        _sha256_file(path, h)
        sidecar = path.with_name(path.name + ".data")
        if root is not None and sidecar.is_symlink():
            sidecar = safe_path(root, sidecar, what="external data file")
        if sidecar.is_file():
            h.update(b"\0sidecar\0")
            _sha256_file(sidecar, h)
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
            _sha256_file(file, h)
    else:
        return "missing"
    return h.hexdigest()


def data_hashes(spec: ModelSpec, root: Path) -> dict[str, str]:
    out = {}
    cal = spec.calibration_spec()
    for role, data in (("calibration", cal.data if cal else None),
                       ("evaluation", spec.evaluation.data if spec.evaluation else None)):
        if data:
            try:
                out[role] = content_sha256(safe_path(root, data, what=f"{role} data path",
                                                     field=f"{role}.data", tree=True), root)
            except EdgeGateError:
                out[role] = "unreadable"
    return out


def policy_hash(device: ResolvedDevice) -> str:
    payload = {"id": device.id, "target": device.target,
               "profile": device.profile.model_dump(mode="json"),
               "limits": {k: v.value for k, v in sorted(device.limits.items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def result_key(model_sha: str, device: ResolvedDevice, spec: ModelSpec, config: Config,
               data: dict[str, str], tools: dict, machine: dict) -> str:
    payload = {"format": CACHE_FORMAT, "model_sha256": model_sha, "device": device.id,
               "policy": policy_hash(device), "data": data,
               "spec": spec.model_dump(mode="json", exclude={"path", "name", "devices"}),
               "benchmark": config.benchmark.model_dump(mode="json"),
               "quantization": config.quantization.model_dump(mode="json"),
               "toolchain": tools,
               "machine": {k: machine.get(k) for k in ("os", "arch", "cpu", "cores", "isa")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    key: str
    model: dict
    result: DeviceResult
    commit: str | None
    created_at: str | None
    folder: Path


class ResultCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Entry | None:
        folder = self._folder(key)
        try:
            data = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                raise ValueError("stale entry")
            result = DeviceResult.model_validate(data["result"])
            if result.artifact and not (folder / "files" / Path(result.artifact.path).name).exists():
                raise ValueError("artifact missing")
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return Entry(key, data.get("model", {}), result, data.get("commit"), data.get("created_at"),
                     folder)

    def put(self, key: str, model: ModelReport, result: DeviceResult, out_dir: Path,
            commit: str | None, created_at: str | None) -> bool:
        """Store a measured result (passed or failed) and its artifact; errors are not cached."""
        if result.status not in ("passed", "failed"):
            return False
        folder = self._folder(key)
        if (folder / "entry.json").is_file():
            return True
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=folder.parent))
        try:
            (tmp / "files").mkdir()
            if result.artifact:
                src = out_dir / result.artifact.path
                _copy(src, tmp / "files" / src.name)
                sidecar = src.with_name(src.name + ".data")
                if sidecar.is_file():
                    shutil.copy2(sidecar, tmp / "files" / sidecar.name)
            clean = result.model_copy(update={"cache": None, "baseline": None})
            entry = {"format": CACHE_FORMAT, "key": key, "commit": commit, "created_at": created_at,
                     "model": model.model_dump(mode="json", include=set(MODEL_FIELDS)),
                     "result": clean.model_dump(mode="json")}
            (tmp / "entry.json").write_text(json.dumps(entry, indent=1), encoding="utf-8")
            try:
                tmp.rename(folder)
            except OSError:            # another job stored the same key first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def restore(self, entry: Entry, out_dir: Path, name_slug: str, device_slug: str) -> DeviceResult:
        """The cached result with its artifact copied into OUT/artifacts under this run's name."""
        result = entry.result
        art = result.artifact
        if art is not None:
            src = entry.folder / "files" / Path(art.path).name
            suffix = "".join(Path(art.path).suffixes[-1:])
            dest = out_dir / "artifacts" / f"{name_slug}-{device_slug}-{art.precision}{suffix}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            _copy(src, dest)
            sidecar = src.with_name(src.name + ".data")
            if sidecar.is_file():
                shutil.copy2(sidecar, dest.with_name(dest.name + ".data"))
            art = Artifact(**{**art.model_dump(), "path": dest.relative_to(out_dir).as_posix()})
        return result.model_copy(update={
            "artifact": art,
            "cache": CacheInfo(key=entry.key, hit=True, commit=entry.commit, created_at=entry.created_at)})


def _copy(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
