"""The result bundle of the two-workflow fork pattern.

The pull_request job (read-only token on forks) writes the bundle: report.json and a small
bundle.json naming the PR and head SHA. The workflow_run job (write token) validates it before
anything is posted: only known files, no links, sizes within limits, report.json against its
schema. Everything in it is untrusted: the comment is re-rendered from the validated report (the
bundle's own Markdown is never posted) and the PR is resolved from the trusted head SHA of the
workflow_run event, never taken from the bundle."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgegate.errors import InputError, UnsafeInputError
from edgegate.report.model import Report, read_report

BUNDLE_VERSION = 1
MAX_REPORT_BYTES = 16 << 20
MAX_META_BYTES = 64 << 10
ALLOWED = {"report.json", "bundle.json"}


@dataclass(frozen=True)
class Bundle:
    report: Report
    head_sha: str | None
    pr_number: int | None


def write_bundle(out_dir: Path, dest: Path, *, pr_number: int | None, head_sha: str | None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.iterdir():
        if stale.name in ALLOWED:
            stale.unlink()
    shutil.copyfile(out_dir / "report.json", dest / "report.json")
    (dest / "bundle.json").write_text(json.dumps({"bundle_version": BUNDLE_VERSION,
                                                  "pr_number": pr_number, "head_sha": head_sha}) + "\n",
                                      encoding="utf-8")
    return dest


def read_bundle(folder: Path) -> Bundle:
    """Validate and read a downloaded bundle; raises InputError/UnsafeInputError on anything odd."""
    fix = "upload the folder written by the pull_request job (output 'bundle') unchanged"
    if not folder.is_dir() or folder.is_symlink():
        raise InputError("the result bundle is not a folder", file=str(folder),
                         fix="download the artifact first (actions/download-artifact) and pass its path "
                             "as 'bundle'")
    for entry in folder.iterdir():
        if entry.is_symlink() or not entry.is_file():
            raise UnsafeInputError("the result bundle holds a link or a folder", file=str(entry), fix=fix)
        if entry.name not in ALLOWED:
            raise UnsafeInputError("the result bundle holds an unexpected file", file=str(entry),
                                   value=entry.name, fix=fix)
    report_path = folder / "report.json"
    if not report_path.is_file():
        raise InputError("the result bundle has no report.json", file=str(folder), fix=fix)
    size = report_path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise UnsafeInputError(f"report.json in the result bundle is {size} bytes, over the "
                               f"{MAX_REPORT_BYTES} byte limit", file=str(report_path), fix=fix)
    report = read_report(report_path)          # schema-checked (pydantic, extra keys forbidden)
    head_sha, pr_number = None, None
    meta = folder / "bundle.json"
    if meta.is_file():
        if meta.stat().st_size > MAX_META_BYTES:
            raise UnsafeInputError("bundle.json is too large", file=str(meta), fix=fix)
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("bundle.json is not JSON", file=str(meta), fix=fix) from None
        if not isinstance(data, dict) or data.get("bundle_version") != BUNDLE_VERSION:
            raise InputError("bundle.json has an unknown bundle_version", file=str(meta), fix=fix)
        sha = data.get("head_sha")
        num = data.get("pr_number")
        head_sha = sha if isinstance(sha, str) and len(sha) == 40 and all(c in "0123456789abcdef" for c in sha) else None
        pr_number = num if isinstance(num, int) and not isinstance(num, bool) and num > 0 else None
    return Bundle(report=report, head_sha=head_sha, pr_number=pr_number)
