"""Hostile edgegate.yml and policy files, paths that escape the repository, and enormous file
lists: each ends in a clear configuration error (or a bounded report), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hostile
from conftest import commit_all, git

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi"))


def edgegate(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _repo(tmp_path: Path, config: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "edgegate.yml").write_text(config)
    (repo / "README.md").write_text("x\n")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "base")
    (repo / "CHANGES.md").write_text("y\n")
    commit_all(repo, "head")
    return repo


HOSTILE_CONFIGS = {    # name -> (text, words the error must hold)
    "billion-laughs": (BOMB, "alias bomb"),
    "deep-flow-nesting": ("version: 1\nmodels: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper"),
    "deep-block-nesting": ("version: 1\nx:\n" + "".join("  " * (i + 1) + "- \n" for i in range(200)),
                           "nests deeper"),
    "oversized": ("version: 1\n# " + "x" * (2 << 20) + "\n", "bytes, more than"),
    "binary": ("\x00\x01\x02\xff\xfe", "YAML"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CONFIGS))
def test_hostile_config_is_a_config_error(tmp_path, name):
    text, words = HOSTILE_CONFIGS[name]
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "edgegate.yml").write_text(text, encoding="utf-8", errors="surrogateescape")
    proc = edgegate("run", "--base", "HEAD", cwd=repo)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "edgegate.yml" in proc.stderr


@pytest.mark.parametrize("policy", ["../outside.yml", "ABSOLUTE", "link.yml"])
def test_a_policy_path_out_of_the_repository_is_refused_and_the_report_written(tmp_path, policy):
    outside = tmp_path / "outside.yml"
    outside.write_text("version: 1\ndevices: {x86-cpu: {max_size_mb: 1000000}}\n")
    if policy == "ABSOLUTE":
        policy = str(outside)
    config = f"version: 1\npolicy: {policy}\nmodels: [{{path: models/*.onnx}}]\n"
    repo = _repo(tmp_path, config)
    os.symlink(outside, repo / "link.yml")
    proc = edgegate("run", "--base", "HEAD~1", cwd=repo)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    (error,) = report["errors"]
    assert error["kind"] == "unsafe-input" and "outside the repository" in error["message"]
    assert error["file"] == "edgegate.yml" and error["line"] == 2 and error["fix"]


def test_a_cache_dir_out_of_the_repository_is_refused(tmp_path):
    repo = _repo(tmp_path, "version: 1\ncache: {dir: ../../cache-here}\nmodels: [{path: m/*.onnx}]\n")
    hostile.random_bytes(repo / "m" / "a.onnx", size=64, seed=0)   # the glob matches a file
    commit_all(repo, "a model")
    before = hostile.snapshot(tmp_path, skip=repo)
    proc = edgegate("run", "--base", "HEAD~1", cwd=repo)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    assert "cache.dir leads outside the repository" in report["errors"][0]["message"]
    assert hostile.snapshot(tmp_path, skip=repo) == before


def test_thousands_of_changed_files_and_a_glob_matching_thousands(tmp_path):
    """A pull request touching 5,000 files, 2,000 of them broken models matched by one glob:
    every model is its own error row, the comment stays within GitHub's size limit."""
    repo = _repo(tmp_path, "version: 1\nmodels:\n  - path: models/**.onnx\n"
                           "    calibration: {synthetic: true}\n")
    (repo / "docs").mkdir()
    (repo / "models").mkdir()
    for i in range(3000):
        (repo / f"docs/page{i:04d}.md").write_text(f"{i}\n")
    for i in range(2000):
        hostile.random_bytes(repo / f"models/m{i:04d}.onnx", size=64, seed=i)
    commit_all(repo, "5,000 files")
    proc = edgegate("run", "--base", "HEAD~1", "--quiet", cwd=repo, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    assert len(report["models"]) == 2000
    assert all(m["status"] == "error" and m["error"]["kind"] == "input" for m in report["models"])
    comment = (repo / ".edgegate-out/comment.md").read_text()
    assert len(comment) <= 65536
    assert not (repo / ".edgegate-out/.work").exists()
