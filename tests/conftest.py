"""Shared fixtures: real small models trained on real labelled data (scikit-learn's digits).

Everything heavy is built once per session and cached; tests copy what they change.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import digits  # noqa: E402


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           "-c", "commit.gpgsign=false", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def digits_arrays():
    """(x_train, y_train, x_test, y_test) as used by every digits model."""
    return digits.digits_data()


@pytest.fixture(scope="session")
def digits_torch(tmp_path_factory):
    """A trained torch CNN (width 16) and its PyTorch test accuracy."""
    pytest.importorskip("torch")
    model, acc = digits.train_cnn(seed=0, epochs=3, width=16)
    return model, acc


@pytest.fixture(scope="session")
def digits_onnx_cached(tmp_path_factory, digits_torch):
    folder = tmp_path_factory.mktemp("digits-onnx")
    path = digits.export_onnx(digits_torch[0], folder / "digits.onnx")
    digits.write_data(folder / "data")
    return folder


@pytest.fixture
def digits_onnx(digits_onnx_cached, tmp_path):
    """A copy of the trained digits ONNX model with data/calibration.npz and data/evaluation.npz."""
    dest = tmp_path / "digits"
    shutil.copytree(digits_onnx_cached, dest)
    return dest


CONFIG = """version: 1
models:
  - path: models/*.onnx
    calibration: data/calibration.npz
    evaluation:
      data: data/evaluation.npz
      labels: labels
      metric: top1
    devices: [x86-cpu]
benchmark:
  repeats: 20
  min_time_s: 0.2
  max_time_s: 5
"""


@pytest.fixture
def model_repo(tmp_path, digits_onnx_cached):
    """A git repository with the digits model committed (one commit on main), edgegate.yml and data."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copytree(digits_onnx_cached / "data", repo / "data")
    shutil.copy(digits_onnx_cached / "digits.onnx", repo / "models" / "digits.onnx")
    (repo / "edgegate.yml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    return repo


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def perturbed_copy(src: Path, dst: Path, seed: int = 1) -> Path:
    """The same model with slightly different weights (a 'retrained' version)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 16:
            arr = arr * (1 + 0.01 * rng.standard_normal(arr.shape).astype(np.float32))
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst
