"""Release assets: every artifact of a report under a deterministic ASCII name
(``<model>-<device>-<precision>.<ext>``), plus SHA256SUMS and manifest.json (metrics and toolchain
versions). Published as draft -> upload -> publish; a re-run replaces assets of the same name."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgegate.errors import InputError
from edgegate.github.client import GitHubRepo
from edgegate.report.model import Report

MAX_ASSET_BYTES = 2 << 30            # GitHub refuses release assets of 2 GiB or more
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Asset:
    name: str
    path: Path
    size_bytes: int
    sha256: str
    model: str | None = None
    device: str | None = None
    precision: str | None = None
    format: str | None = None
    metrics: dict = field(default_factory=dict)


def ascii_name(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:120] or "asset"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def deterministic_zip(folder: Path, dest: Path) -> Path:
    """The same folder gives the same bytes: sorted entries, fixed times and modes."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder).as_posix()}", _ZIP_TIME)
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return dest


def collect_assets(report: Report, out_dir: Path, staging: Path) -> list[Asset]:
    """Assets for every artifact in the report, then SHA256SUMS and manifest.json (written to
    ``staging``). Folders (.mlpackage, SavedModel) become deterministic zips; an ONNX model's
    external-data file travels beside it."""
    staging.mkdir(parents=True, exist_ok=True)
    assets: list[Asset] = []
    names: set[str] = set()
    for model in report.models:
        for result in model.results:
            art = result.artifact
            if art is None:
                continue
            src = (out_dir / art.path).resolve()
            if not src.is_relative_to(out_dir.resolve()) or not src.exists():
                raise InputError("an artifact named in report.json is missing or outside the run's "
                                 "folder", file=str(out_dir / art.path), fix="re-run 'edgegate run'")
            base = ascii_name(Path(art.path).name)
            files = [(base, src)]
            if src.is_dir():
                files = [(base + ".zip", deterministic_zip(src, staging / (base + ".zip")))]
            data = src.with_name(src.name + ".data")
            if data.is_file():
                files.append((base + ".data", data))
            for name, path in files:
                if name in names:
                    continue
                names.add(name)
                metrics = {k: v for k, v in result.metrics.model_dump().items()
                           if v is not None and k != "not_measured"}
                assets.append(Asset(name, path, path.stat().st_size, _sha256(path), model.name,
                                    result.device, art.precision, art.format, metrics))
    sums = staging / "SHA256SUMS"
    sums.write_text("".join(f"{a.sha256}  {a.name}\n" for a in sorted(assets, key=lambda a: a.name)),
                    encoding="ascii")
    manifest = staging / "manifest.json"
    manifest.write_text(json.dumps({
        "edgegate_version": report.edgegate_version, "created_at": report.created_at,
        "commits": report.commits, "toolchain": report.toolchain, "machine": report.machine,
        "verdict": report.verdict,
        "assets": [{k: v for k, v in asdict(a).items() if k != "path"} for a in assets],
    }, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for path in (sums, manifest):
        assets.append(Asset(path.name, path, path.stat().st_size, _sha256(path)))
    return assets


def check_sizes(assets: list[Asset]) -> None:
    """Refuse before uploading anything: GitHub rejects assets of 2 GiB or more."""
    big = [a for a in assets if a.size_bytes >= MAX_ASSET_BYTES]
    if big:
        a = big[0]
        raise InputError(f"release asset '{a.name}' is {a.size_bytes} bytes; GitHub accepts "
                         f"assets under 2 GiB ({MAX_ASSET_BYTES} bytes)", file=str(a.path),
                         value=a.size_bytes,
                         fix="compress the model further (a lower precision), split it, or publish "
                             "it elsewhere and link it from the release notes")


def _find_release(gh: GitHubRepo, tag: str):
    # the listing includes drafts (the by-tag endpoint hides them), so a re-run after a crash
    # finds the draft it left instead of creating a second one
    for release in gh.repo.get_releases():
        if release.tag_name == tag:
            return release
    return None


def publish(gh: GitHubRepo, tag: str, assets: list[Asset], *, name: str | None = None,
            body: str = "", log=lambda message: None) -> str:
    """Create the release as a draft (unless it exists), replace same-name assets, then publish.
    Returns the release's html_url."""
    check_sizes(assets)

    def ensure():
        release = _find_release(gh, tag)
        if release is None:
            release = gh.repo.create_git_release(tag, name or tag, body, draft=True)
        return release

    release = gh.call(f"find or create release {tag}", ensure)
    for asset in assets:
        def upload(asset=asset):
            for existing in release.get_assets():
                if existing.name == asset.name:
                    existing.delete_asset()
            release.upload_asset(str(asset.path), label="", content_type="application/octet-stream",
                                 name=asset.name)

        gh.call(f"upload release asset {asset.name}", upload)
        log(f"uploaded {asset.name} ({asset.size_bytes} bytes)")
    if release.draft:
        release = gh.call(f"publish release {tag}", lambda: release.update_release(
            release.name or tag, release.body or body, draft=False, prerelease=release.prerelease))
    return release.html_url
