"""Symlinks and FIFOs out of the path guard, and bad data that used to crash (issue 18, items 2
and 4). Each case is a real `edgegate run` on a real git repository built here: the hostile
input ends as an error naming its file (exit 2, `report.json` written), never a traceback, a
hang or a read outside the repository; in the shared run the good model is still gated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import hostile
from conftest import commit_all, git

FAST = ("benchmark: {repeats: 10, min_time_s: 0.1, max_time_s: 2}\n"
        "quantization: {search_samples: 100, search_time_s: 20}\n")
IMAGES = "{resize: [8, 8], layout: NCHW}"
CONFIG = f"""version: 1
devices: [x86-cpu]
{FAST}models:
  - path: models/good.onnx
    calibration: data/good.npz
    evaluation: {{data: data/good.npz, labels: labels, metric: top1}}
  - path: models/string_labels.onnx
    calibration: data/good.npz
    evaluation: {{data: data/strings.npz, labels: labels, metric: top1}}
  - path: models/huge_header.onnx
    calibration: data/huge.npz
  - path: models/images.onnx
    calibration: {{data: data/imgs, preprocess: {IMAGES}}}
  - path: models/synthetic.onnx
    calibration: {{synthetic: true, samples: 10000000000}}
  - path: if_ext.onnx
    calibration: {{synthetic: true, samples: 4}}
  - path: models/custom_op.onnx
    calibration: {{synthetic: true, samples: 4}}
"""


def edgegate(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _labelled(weight: np.ndarray, n: int = 60, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((n, weight.shape[0])).astype(np.float32)
    return x, np.argmax(x @ weight, axis=1).astype(np.int64)


def _image(path: Path, seed: int) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _report(repo: Path) -> dict:
    path = repo / ".edgegate-out/report.json"
    assert path.is_file(), "report.json was not written"
    return json.loads(path.read_text())


def _error_of(model: dict) -> dict:
    if model["error"]:
        return model["error"]
    return next(r["error"] for r in model["results"] if r["error"])


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """main: the configuration and data; the pull request: one good model beside the hostile ones."""
    root = tmp_path_factory.mktemp("paths")
    repo, outside = root / "repo", root / "outside"
    outside.mkdir()
    (root / "x").write_bytes(np.arange(16, dtype=np.float32).tobytes())      # what ../x reaches
    _image(outside / "evil.png", 99)
    data = repo / "data"
    data.mkdir(parents=True)
    models = root / "held" / "models"
    _, weight = hostile.onnx_classifier(models / "good.onnx")
    x, labels = _labelled(weight)
    np.savez(data / "good.npz", input=x, labels=labels)
    for name in ("string_labels", "huge_header", "synthetic"):
        hostile.onnx_classifier(models / f"{name}.onnx")
    np.savez(data / "strings.npz", input=x, labels=np.array(["cat", "dog", "owl"])[labels])
    hostile.npz_huge_header(data / "huge.npz", others={"labels": labels})
    hostile.onnx_classifier(models / "images.onnx", image=(3, 8, 8))
    for i in range(3):
        _image(data / "imgs/cat" / f"{i}.png", i)
        _image(data / "imgs/dog" / f"{i}.png", 10 + i)
    os.symlink(outside / "evil.png", data / "imgs/cat/evil.png")
    hostile.onnx_custom_op(models / "custom_op.onnx")
    (repo / "edgegate.yml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "configuration and data")
    os.rename(models, repo / "models")
    hostile.onnx_if_external(repo / "if_ext.onnx", "../x")
    commit_all(repo, "a pull request with hostile models and data")
    before = hostile.snapshot(root, skip=repo)
    proc = edgegate("run", "--base", "HEAD~1", "--no-cache", "--baseline", "off", cwd=repo)
    report = _report(repo)
    return dict(proc=proc, report=report, models={m["path"]: m for m in report["models"]},
                created_outside=hostile.snapshot(root, skip=repo) - before)


def _expect(run: dict, path: str, kinds: set[str], *words: str, file: str | None = None) -> dict:
    proc = run["proc"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    model = run["models"][path]
    assert model["status"] == "error", model
    error = _error_of(model)
    text = error["message"]
    assert error["kind"] in kinds and all(w in text for w in words) and error["fix"], error
    assert error["file"] == (file or path), error
    return error


@pytest.mark.slow
def test_the_good_model_beside_them_is_still_gated(shared_run):
    good = shared_run["models"]["models/good.onnx"]
    assert good["status"] in ("passed", "failed"), good
    (row,) = good["results"]
    assert row["metrics"]["accuracy_after"] is not None, row
    assert shared_run["created_outside"] == set()


@pytest.mark.slow
def test_a_symlinked_image_inside_an_image_folder_is_refused(shared_run):
    _expect(shared_run, "models/images.onnx", {"unsafe-input"}, "outside the repository",
            "data/imgs/cat/evil.png", "calibration.data", file="data/imgs/cat/evil.png")


@pytest.mark.slow
def test_external_data_hidden_in_an_if_subgraph_is_refused_as_unsafe(shared_run):
    _expect(shared_run, "if_ext.onnx", {"unsafe-input"}, "outside the repository", "W_then", "../x")


@pytest.mark.slow
def test_an_npz_header_declaring_2_pib_is_refused_before_allocating(shared_run):
    _expect(shared_run, "models/huge_header.onnx", {"input"}, "2,251,799,813,685,248",
            "'input'", "memory budget", file="data/huge.npz")


@pytest.mark.slow
def test_string_labels_are_bad_data_naming_the_field_and_dtype(shared_run):
    _expect(shared_run, "models/string_labels.onnx", {"input"}, "evaluation.labels", "<U3",
            "integer class indices", file="data/strings.npz")


@pytest.mark.slow
def test_ten_billion_synthetic_samples_are_refused_by_the_memory_budget(shared_run):
    error = _expect(shared_run, "models/synthetic.onnx", {"config"}, "10,000,000,000",
                    "memory budget", file="models/synthetic.onnx")
    assert error["field"] == "calibration.samples"


@pytest.mark.slow
def test_a_custom_domain_op_no_runtime_provides_is_named(shared_run):
    _expect(shared_run, "models/custom_op.onnx", {"input"}, "EdgeGateNoSuchOp", "com.hostile")


def _small_repo(tmp_path: Path) -> tuple[Path, Path]:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    outside.mkdir()
    (repo / "models").mkdir(parents=True)
    hostile.onnx_classifier(outside / "secret.onnx")
    hostile.onnx_classifier(repo / "models/good.onnx")     # so the glob matches a file
    (repo / "edgegate.yml").write_text("version: 1\nmodels:\n  - path: models/*.onnx\n"
                                       "    calibration: {synthetic: true, samples: 4}\n")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "base")
    return repo, outside


def test_a_model_path_on_the_command_line_that_links_out_is_refused(tmp_path):
    repo, outside = _small_repo(tmp_path)
    os.symlink(outside / "secret.onnx", repo / "models/link.onnx")
    commit_all(repo, "a link out")
    proc = edgegate("run", "models/link.onnx", "--no-cache", cwd=repo, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (model,) = _report(repo)["models"]
    error = model["error"]
    assert error["kind"] == "unsafe-input" and "outside the repository" in error["message"]
    assert error["file"] == "models/link.onnx" and error["field"] == "path", error
    assert "sha256" not in model or model.get("sha256") is None   # not even hashed


def test_a_fifo_named_model_onnx_is_refused_without_being_opened(tmp_path):
    repo, _ = _small_repo(tmp_path)
    os.mkfifo(repo / "models/model.onnx")            # git cannot commit one: named on the CLI
    started = time.monotonic()
    proc = edgegate("run", "models/model.onnx", "--no-cache", cwd=repo, timeout=30)
    assert time.monotonic() - started < 30
    assert proc.returncode == 2, proc.stderr[-2000:]
    (model,) = _report(repo)["models"]
    error = model["error"]
    assert error["kind"] == "unsafe-input" and "FIFO" in error["message"], error
    assert error["file"] == "models/model.onnx", error


def test_a_committed_edgegate_yml_linking_out_of_the_repository_is_refused(tmp_path):
    repo, outside = _small_repo(tmp_path)
    (outside / "edgegate.yml").write_text("version: 1\nmodels: [{path: '**'}]\n")
    (repo / "edgegate.yml").unlink()
    os.symlink(outside / "edgegate.yml", repo / "edgegate.yml")
    commit_all(repo, "edgegate.yml links out")
    proc = edgegate("run", "--base", "HEAD~1", cwd=repo, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "edgegate.yml" in proc.stderr, proc.stderr
    report = _report(repo)
    (error,) = report["errors"]
    assert error["kind"] == "unsafe-input" and "outside the repository" in error["message"]
    assert error["file"] == "edgegate.yml" and report["models"] == []


def test_a_savedmodel_whose_saved_model_pb_links_out_is_refused_before_tensorflow(tmp_path):
    repo, outside = _small_repo(tmp_path)
    hostile.random_bytes(outside / "saved_model.pb")
    folder = repo / "models/exported"
    (folder / "variables").mkdir(parents=True)
    hostile.random_bytes(folder / "variables/variables.index", size=64)
    os.symlink(outside / "saved_model.pb", folder / "saved_model.pb")
    commit_all(repo, "a SavedModel whose graph file links out")
    proc = edgegate("run", "models/exported", "--no-cache", cwd=repo, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (model,) = _report(repo)["models"]
    error = model["error"]
    assert error["kind"] == "unsafe-input" and "outside the repository" in error["message"]
    assert error["file"] == "models/exported/saved_model.pb", error
