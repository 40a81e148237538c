"""Calibration and evaluation sources: .npz/.npy, image folders with preprocessing, splits, synthetic."""

import numpy as np
import pytest

from edgegate.config.schema import ModelSpec
from edgegate.data import TensorSpec, prepare_data
from edgegate.errors import ConfigError, InputError, UnsafeInputError

INPUTS = [TensorSpec("input", ("batch", 1, 8, 8), "float32")]


def spec(**kw):
    return ModelSpec.model_validate({"path": "m.onnx", **kw})


@pytest.fixture
def digits8(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float64)[:, None]        # float64 on purpose: cast to float32
    np.savez(tmp_path / "eval.npz", input=x[:400], labels=d.target[:400])
    np.savez(tmp_path / "cal.npz", input=x[400:700])
    np.save(tmp_path / "cal.npy", x[400:700])
    return tmp_path, d


def test_npz_calibration_and_evaluation(digits8):
    root, _ = digits8
    data = prepare_data(spec(calibration={"data": "cal.npz", "samples": 50, "seed": 3},
                             evaluation={"data": "eval.npz"}), INPUTS, root)
    assert len(data.calibration) == 50 and len(data.evaluation) == 400
    assert data.calibration.info["samples"] == 50 and data.calibration.info["seed"] == 3
    feed = data.calibration.feed(0)
    assert feed["input"].shape == (1, 1, 8, 8) and feed["input"].dtype == np.float32
    assert data.evaluation.labels.shape == (400,)
    assert data.warnings == []


def test_seed_changes_the_draw_and_is_reproducible(digits8):
    root, _ = digits8
    a = prepare_data(spec(calibration={"data": "cal.npz", "samples": 20, "seed": 1}), INPUTS, root)
    b = prepare_data(spec(calibration={"data": "cal.npz", "samples": 20, "seed": 1}), INPUTS, root)
    c = prepare_data(spec(calibration={"data": "cal.npz", "samples": 20, "seed": 2}), INPUTS, root)
    assert np.array_equal(a.calibration.inputs["input"], b.calibration.inputs["input"])
    assert not np.array_equal(a.calibration.inputs["input"], c.calibration.inputs["input"])


def test_npy_feeds_a_single_input(digits8):
    root, _ = digits8
    data = prepare_data(spec(calibration="cal.npy"), INPUTS, root)
    assert len(data.calibration) == 200                       # default sample count


def test_calibration_drawn_from_evaluation_is_disjoint_and_said(digits8):
    root, _ = digits8
    data = prepare_data(spec(evaluation={"data": "eval.npz"}), INPUTS, root)
    cal, ev = data.calibration.inputs["input"], data.evaluation.inputs["input"]
    assert len(cal) + len(ev) == 400 and len(cal) == 200
    cal_rows = {row.tobytes() for row in cal}
    ev_rows = [row.tobytes() for row in ev]
    # digits has a few duplicate images; the split is by sample, so nearly none may coincide
    assert sum(r in cal_rows for r in ev_rows) <= 5
    assert data.calibration.info["source"] == "evaluation-split"
    assert any("drawn from" in w for w in data.warnings)


def test_synthetic_only_when_asked_and_warned(digits8):
    root, _ = digits8
    with pytest.raises(ConfigError) as err:
        prepare_data(spec(), INPUTS, root)
    assert "synthetic" in err.value.fix
    data = prepare_data(spec(calibration={"synthetic": True, "samples": 10}), INPUTS, root)
    assert data.calibration.info["source"] == "synthetic" and len(data.calibration) == 10
    assert any("synthetic" in w and "mean little" in w for w in data.warnings)


def test_wrong_shape_names_the_file_and_the_expected_shape(digits8):
    root, _ = digits8
    np.savez(root / "bad.npz", input=np.zeros((10, 3, 8, 8), np.float32))
    with pytest.raises(InputError) as err:
        prepare_data(spec(calibration="bad.npz"), INPUTS, root)
    assert err.value.file == "bad.npz" and "'batch', 1, 8, 8" in err.value.message


def test_wrong_array_name_and_missing_labels(digits8):
    root, _ = digits8
    np.savez(root / "named.npz", pixels=np.zeros((10, 1, 8, 8), np.float32),
             other=np.zeros((10, 1, 8, 8), np.float32))
    with pytest.raises(InputError) as err:
        prepare_data(spec(calibration="named.npz"), INPUTS, root)
    assert "input" in err.value.fix
    with pytest.raises(InputError) as err:
        prepare_data(spec(calibration="cal.npz", evaluation={"data": "cal.npz"}), INPUTS, root)
    assert "labels" in err.value.message


def test_missing_file_and_path_escape(digits8):
    root, _ = digits8
    with pytest.raises(InputError) as err:
        prepare_data(spec(calibration="nope.npz"), INPUTS, root)
    assert err.value.file == "nope.npz" and "not found" in err.value.message
    with pytest.raises(UnsafeInputError):
        prepare_data(spec(calibration="../outside.npz"), INPUTS, root)


def test_pickled_npy_is_refused(digits8):
    root, _ = digits8
    np.save(root / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError) as err:
        prepare_data(spec(calibration="obj.npy"), INPUTS, root)
    assert "unpickling" in err.value.message


def test_image_folder_with_preprocessing(digits8):
    from PIL import Image

    root, d = digits8
    for cls in range(3):
        folder = root / "images" / f"class{cls}"
        folder.mkdir(parents=True)
        for k, img in enumerate(d.images[d.target == cls][:4]):
            Image.fromarray((img * 16).astype(np.uint8)).convert("RGB").resize((16, 16)).save(folder / f"{k}.png")
    inputs = [TensorSpec("input", (1, 1, 8, 8), "float32")]
    pre = {"resize": [8, 8], "layout": "NCHW", "channel_order": "GRAY", "scale": 1 / 255,
           "mean": [0.5], "std": [0.25]}
    data = prepare_data(spec(calibration={"data": "images", "preprocess": pre},
                             evaluation={"data": "images", "preprocess": pre}), inputs, root)
    assert data.evaluation.inputs["input"].shape == (12, 1, 8, 8)
    assert sorted(set(data.evaluation.labels.tolist())) == [0, 1, 2]
    x = data.evaluation.inputs["input"]
    assert x.min() >= (0 - 0.5) / 0.25 - 1e-6 and x.max() <= (1 - 0.5) / 0.25 + 1e-6
    nhwc = prepare_data(spec(calibration={"data": "images", "preprocess": {**pre, "layout": "NHWC",
                                                                           "channel_order": "RGB"}}),
                        [TensorSpec("input", (1, 8, 8, 3), "float32")], root)
    assert nhwc.calibration.feed(0)["input"].shape == (1, 8, 8, 3)


def test_a_scalar_input_is_fed_as_a_0d_array():
    """A rank-0 model input (silero-vad's int64 'sr') comes out of the data as an ndarray, which
    ONNX Runtime accepts; a numpy scalar it refuses."""
    import numpy as np

    from edgegate.data.sources import Dataset

    data = Dataset({"sr": np.full(3, 16000, dtype=np.int64)}, None, {}, {"sr": True})
    fed = data.feed(1)["sr"]
    assert isinstance(fed, np.ndarray) and fed.shape == () and fed.dtype == np.int64
