"""Keras models as .keras, .h5 and SavedModel, gated end to end through the real CLI on a pull
request's diff; a broken SavedModel and a Lambda layer become error rows, the others are gated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow", reason="needs the tensorflow extra")
keras = pytest.importorskip("keras", reason="needs the tensorflow extra")
pytest.importorskip("tf2onnx", reason="needs the tensorflow extra")

from conftest import commit_all, git  # noqa: E402

from edgegate.config.schema import ModelSpec  # noqa: E402
from edgegate.errors import UnsafeInputError  # noqa: E402
from edgegate.frontends.tensorflow import TensorFlowFrontend  # noqa: E402

pytestmark = pytest.mark.tensorflow

DATA = """    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
    devices: [x86-cpu]
"""
CONFIG = f"""version: 1
models:
  - path: models/*.keras
{DATA}  - path: models/*.h5
{DATA}  - path: models/digits_savedmodel
{DATA}  - path: models/broken_savedmodel
{DATA}benchmark: {{repeats: 10, min_time_s: 0.1, max_time_s: 2}}
quantization: {{search_samples: 100}}
"""


def digits_nhwc(seed: int = 0):
    """scikit-learn digits, 8x8x1 (NHWC, Keras' layout), the same split as examples/digits.py."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[..., None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * 0.7)
    return x[:split], y[:split], x[split:], y[split:]


@pytest.fixture(scope="session")
def keras_digits():
    """A tiny Keras CNN trained on digits (2 conv layers, 2 epochs) and its Keras test accuracy."""
    x_train, y_train, x_test, y_test = digits_nhwc()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="input"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    pred = model.predict(x_test, verbose=0).argmax(1)
    return model, float((pred == y_test).mean() * 100)


@pytest.fixture(scope="module")
def keras_repo(tmp_path_factory, keras_digits):
    """main: configuration and data. The next commit adds the model in every format, a broken
    SavedModel and a model with a Lambda layer."""
    model, _ = keras_digits
    repo = tmp_path_factory.mktemp("keras") / "repo"
    (repo / "data").mkdir(parents=True)
    x_train, _, x_test, y_test = digits_nhwc()
    np.savez_compressed(repo / "data/calibration.npz", input=x_train[:300])
    np.savez_compressed(repo / "data/evaluation.npz", input=x_test, labels=y_test)
    (repo / "edgegate.yml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "configuration and data")
    models = repo / "models"
    models.mkdir()
    model.save(models / "digits.keras")
    model.save(models / "digits.h5")
    model.export(str(models / "digits_savedmodel"), verbose=False)
    shutil.copytree(models / "digits_savedmodel", models / "broken_savedmodel")
    shutil.rmtree(models / "broken_savedmodel/variables")       # an upload that lost its weights
    (models / "broken_savedmodel/assets/.keep").write_text("")
    lam = keras.Sequential([keras.Input((8, 8, 1), name="input"),
                            keras.layers.Lambda(lambda v: v * 2.0), keras.layers.Flatten(),
                            keras.layers.Dense(10)])
    lam.save(models / "lambda.keras")
    commit_all(repo, "models in every format")
    return repo


@pytest.fixture(scope="module")
def gated(keras_repo):
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "--base", "HEAD~1"],
                          cwd=keras_repo, capture_output=True, text=True, timeout=600)
    report_path = keras_repo / ".edgegate-out/report.json"
    assert report_path.is_file(), proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    return proc, {m["path"]: m for m in report["models"]}


@pytest.mark.slow
@pytest.mark.parametrize("path, loaded_by", [
    ("models/digits.keras", "keras.saving.load_model (safe mode)"),
    ("models/digits.h5", "keras.saving.load_model (safe mode)"),
    ("models/digits_savedmodel", "tf.saved_model.load (signature serving_default)"),
])
def test_every_format_is_gated_with_accuracy_from_keras(gated, keras_digits, path, loaded_by):
    _, models = gated
    report = models[path]
    assert report["status"] in ("passed", "failed"), report.get("error")
    assert report["framework"] == "tensorflow" and report["framework_version"] == tf.__version__
    assert report["export"].startswith(loaded_by + " -> tf2onnx")
    assert report["change"] == "added"
    check = report["info"]["export_check"]
    assert check["check_data"]["max_abs_diff"] < check["check_data"]["tolerance"]
    assert report["info"]["inputs"][0]["shape"][1:] == [8, 8, 1]      # the Keras layout, kept
    (result,) = report["results"]
    metrics = result["metrics"]
    # accuracy_before is Keras' own accuracy on the whole evaluation set
    assert metrics["accuracy_before"] == pytest.approx(keras_digits[1], abs=1e-9)
    assert metrics["accuracy_before"] > 80
    assert metrics["accuracy_after"] is not None and metrics["top1_agreement"] is not None


@pytest.mark.slow
def test_broken_and_unsafe_models_are_error_rows_and_the_rest_is_gated(gated):
    proc, models = gated
    # the SavedModel folder is one model: its files do not show up as models of their own
    assert set(models) == {"models/digits.keras", "models/digits.h5", "models/digits_savedmodel",
                           "models/broken_savedmodel", "models/lambda.keras"}
    broken = models["models/broken_savedmodel"]
    assert broken["status"] == "error" and broken["error"]["kind"] == "input"
    assert "cannot load the SavedModel" in broken["error"]["message"]
    assert "variables/" in broken["error"]["fix"]
    lam = models["models/lambda.keras"]
    assert lam["status"] == "error" and lam["error"]["kind"] == "unsafe-input"
    assert "trust_custom_objects: true" in lam["error"]["fix"]
    assert sum(m["status"] != "error" for m in models.values()) == 3
    assert proc.returncode == 2


def test_a_change_inside_a_savedmodel_gates_the_folder(tmp_path, keras_repo):
    from edgegate.config.load import load_config
    from edgegate.discover import Git, discover

    repo = tmp_path / "repo"
    shutil.copytree(keras_repo, repo)
    variables = next((repo / "models/digits_savedmodel/variables").glob("variables.data-*"))
    variables.write_bytes(variables.read_bytes()[::-1])
    commit_all(repo, "retrained weights only")
    config = load_config(repo / "edgegate.yml").config
    found = discover(config, repo, Git(repo), base="HEAD~1", head="HEAD")
    assert [(j.path, j.change) for j in found.jobs] == [("models/digits_savedmodel", "modified")]


def test_savedmodel_with_file_ops_is_refused_before_loading(tmp_path):
    class Leaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="input")])
        def serve(self, x):
            tf.io.write_file(str(tmp_path / "written-by-model"), tf.strings.as_string(x[0, 0]))
            return x * 2.0

    module = Leaky()
    tf.saved_model.save(module, str(tmp_path / "leaky"), signatures={"serving_default": module.serve})
    with pytest.raises(UnsafeInputError) as err:
        TensorFlowFrontend().load(tmp_path / "leaky", "leaky", ModelSpec(path="leaky"),
                                  tmp_path / "work", tmp_path)
    assert "WriteFile" in err.value.message
    assert not (tmp_path / "written-by-model").exists()


def test_an_unconvertible_op_is_named_with_a_fix(tmp_path):
    from edgegate.errors import ConversionError

    class Spectrum(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4], tf.float32, name="input")])
        def serve(self, x):
            return {"values": tf.linalg.svd(x, compute_uv=False)}

    module = Spectrum()
    tf.saved_model.save(module, str(tmp_path / "svd"), signatures={"serving_default": module.serve})
    with pytest.raises(ConversionError) as err:
        TensorFlowFrontend().load(tmp_path / "svd", "svd", ModelSpec(path="svd"), tmp_path / "work",
                                  tmp_path)
    assert "Svd" in err.value.message and "opset" in err.value.fix
