"""Task fidelity: task inference from shapes and FP32 values, and the per-task metrics, on arrays
built here (pure numpy), plus one tiny YOLO-style detector trained on digits canvases and
quantized to INT8 with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from edgegate.errors import ConfigError
from edgegate.stages.fidelity import (KEYS, SQNR_FLOOR_DB, DetectionLayout, TaskInfo, box_iou, infer_task, nms,
                                      task_fidelity)

IMAGE = [("images", (1, 3, 64, 64), "float32")]


def yolo_head(rng, objects: int = 3, nc: int = 3, anchors: int = 200) -> np.ndarray:
    """A YOLOv8-like [1, 4 + nc, A] head: pixel xywh boxes, background scores below 0.05, and
    `objects` confident boxes of classes 0, 1, 2, ... far apart."""
    boxes = np.stack([rng.uniform(0, 64, anchors), rng.uniform(0, 64, anchors),
                      rng.uniform(4, 20, anchors), rng.uniform(4, 20, anchors)])
    scores = rng.uniform(0, 0.05, (nc, anchors))
    for j, a in enumerate(rng.choice(anchors, objects, replace=False)):
        boxes[:, a] = (10 + 20 * j, 10 + 20 * j, 12, 12)
        scores[j % nc, a] = rng.uniform(0.6, 0.95)
    return np.concatenate([boxes, scores])[None].astype(np.float32)


def heads(n: int = 8, seed: int = 0, **kw) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[yolo_head(rng, **kw) for _ in range(n)]]


def outs(ref: list[list[np.ndarray]], names: list[str] | None = None) -> list[tuple]:
    """The (name, graph shape, dtype) of each output, batch axis dynamic."""
    names = names or [f"out{k}" for k in range(len(ref))]
    return [(name, ("batch",) + samples[0].shape[1:], str(samples[0].dtype)) for name, samples in zip(names, ref)]


YOLOV8 = DetectionLayout("yolov8", 0)


# ------------------------------------------------------------------------------ detection

def test_identical_detections_give_f1_one_and_infinite_sqnr():
    ref = heads()
    metrics, not_measured = task_fidelity(TaskInfo("detection", False, "", YOLOV8), ref, ref)
    assert set(KEYS) <= set(metrics) and metrics["primary_metric"] == "box_f1"
    assert metrics["box_f1"] == 1.0 and metrics["box_f1_detections_fp32"] == 8 * 3
    assert metrics["sqnr_db"] == float("inf") and metrics["cosine_similarity"] == 1.0
    assert not_measured == {} and metrics["top1_agreement"] is None


def test_a_perturbed_score_channel_cannot_hide_under_the_box_channels():
    ref = heads()
    new = [[a.copy() for a in ref[0]]]
    for i, a in enumerate(new[0]):
        if i % 2 == 0:                                        # half the samples lose their class-1 box
            a[0, 5][a[0, 5] > 0.5] *= 0.2
        a[0, 4:] += np.random.default_rng(i).normal(0, 0.01, a[0, 4:].shape).astype(np.float32)
    metrics, _ = task_fidelity(TaskInfo("detection", False, "", YOLOV8), ref, new)
    assert metrics["sqnr_db_tensor"] > 30                      # the whole tensor looks fine
    assert metrics["sqnr_db"] < 15                             # its worst channel does not
    assert metrics["sqnr_worst_output"] == 0 and metrics["sqnr_worst_channel"] == 5
    assert metrics["box_f1"] == pytest.approx(2 * 20 / (24 + 20))   # 4 of 24 boxes lost
    assert metrics["box_f1_detections_artifact"] == 20


def test_moved_boxes_stop_matching():
    ref = heads()
    new = [[a.copy() for a in ref[0]]]
    for a in new[0]:
        a[0, 0] += 9.0                                         # 12-px boxes moved 9 px: IoU 0.14
    metrics, _ = task_fidelity(TaskInfo("detection", False, "", YOLOV8), ref, new)
    assert metrics["box_f1"] == 0.0


def test_nms_removes_duplicates_of_one_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    assert nms(boxes, scores, classes, 0.45).tolist() == [0, 2, 3]
    assert nms(boxes, scores, np.zeros(4, dtype=int), 0.45).tolist() == [0, 3]
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)


def test_duplicates_in_the_artifact_are_suppressed_before_matching():
    ref = heads(n=2, objects=1)
    new = [[a.copy() for a in ref[0]]]
    for a in new[0]:
        best = int(np.argmax(a[0, 4]))
        a[:, :, (best + 1) % a.shape[2]] = a[:, :, best]       # an exact duplicate anchor
        a[0, 4, (best + 1) % a.shape[2]] -= 0.01
    metrics, _ = task_fidelity(TaskInfo("detection", False, "", YOLOV8), ref, new)
    assert metrics["box_f1"] == 1.0


def test_yolov5_score_is_objectness_times_class_score():
    rng = np.random.default_rng(3)
    ref = []
    for _ in range(4):
        head = yolo_head(rng, objects=2, nc=3)[0].T            # [A, 4 + nc]
        obj = np.where(head[:, 4:].max(1) > 0.5, 0.9, rng.uniform(0, 0.05, len(head)))
        cls = np.where(head[:, 4:] > 0.5, 0.95, rng.uniform(0, 1, head[:, 4:].shape))   # unsupervised
        ref.append(np.concatenate([head[:, :4], obj[:, None], cls], 1)[None].astype(np.float32))
    info = infer_task("auto", IMAGE, outs([ref]), [ref])
    assert info.task == "detection" and info.layout.kind == "yolov5" and not info.layout.channels_first
    assert "YOLOv5" in info.why and "1 objectness" in info.why
    new = [a.copy() for a in ref]
    for a in new:
        a[0, :, 4] *= 0.25                                     # objectness lost: 0.9 * 0.95 -> 0.21
    metrics, _ = task_fidelity(info, [ref], [new])
    assert metrics["box_f1"] == 0.0 and metrics["box_f1_detections_fp32"] == 8


def test_yolov8_layouts_are_recognised_channels_first_and_transposed():
    ref = heads()
    info = infer_task("auto", IMAGE, outs(ref, ["output0"]), ref)
    assert info.task == "detection" and info.inferred and info.layout == YOLOV8
    assert "output0" in info.why and "[7, 200]" in info.why
    transposed = [[a.transpose(0, 2, 1).copy() for a in ref[0]]]
    info = infer_task("auto", IMAGE, outs(transposed), transposed)
    assert info.layout == DetectionLayout("yolov8", 0, channels_first=False)
    assert task_fidelity(info, transposed, transposed)[0]["box_f1"] == 1.0


def test_ssd_boxes_and_softmax_scores_are_recognised_with_a_background_column():
    rng = np.random.default_rng(4)
    anchors, boxes, scores = 300, [], []
    for _ in range(4):
        xy = rng.uniform(0, 0.8, (anchors, 2))
        boxes.append(np.concatenate([xy, xy + rng.uniform(0.05, 0.2, (anchors, 2))], 1)[None].astype(np.float32))
        logits = rng.normal(0, 1, (anchors, 5))
        logits[:, 0] += 7                                      # background wins on most anchors
        logits[rng.choice(anchors, 2, replace=False), 1 + rng.integers(0, 4)] += 12
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        scores.append(p[None].astype(np.float32))
    ref = [boxes, scores]
    info = infer_task("auto", IMAGE, outs(ref, ["boxes", "scores"]), ref)
    assert info.task == "detection" and info.layout.kind == "ssd"
    assert (info.layout.output, info.layout.scores_output, info.layout.box_format) == (0, 1, "xyxy")
    assert info.layout.background_class == 0 and "background" in info.why
    metrics, _ = task_fidelity(info, ref, ref)
    assert metrics["box_f1"] == 1.0 and 4 <= metrics["box_f1_detections_fp32"] <= 8


def test_declared_detection_without_a_recognisable_head_names_the_field():
    ref = [[np.random.default_rng(0).normal(size=(1, 10, 300)).astype(np.float32)]]   # logits, not scores
    assert infer_task("auto", IMAGE, outs(ref), ref).task != "detection"
    with pytest.raises(ConfigError) as err:
        infer_task("detection", IMAGE, outs(ref), ref)
    assert err.value.field == "detection" and "layout: yolov8|yolov5|ssd" in err.value.fix
    with pytest.raises(ConfigError):
        infer_task("auto", IMAGE, outs(ref), ref, DetectionLayout("ssd", 0))      # no scores_output
    info = infer_task("auto", IMAGE, outs(ref), ref, DetectionLayout("yolov8", 0))
    assert info.task == "detection" and not info.inferred


def test_no_fp32_detection_leaves_f1_unmeasured_with_a_reason():
    ref = heads(n=5, objects=0)
    metrics, not_measured = task_fidelity(TaskInfo("detection", False, "", YOLOV8), ref, ref)
    assert metrics["box_f1"] is None and metrics["box_f1_detections_fp32"] == 0
    assert "detects no box above conf 0.25 on the 5 evaluation samples" in not_measured["box_f1"]


def test_nan_in_the_artifact_fails_every_metric_that_reads_it():
    ref = heads(n=4)
    new = [[a.copy() for a in ref[0]]]
    new[0][1][0, 6, 17] = np.nan                               # one background anchor
    metrics, _ = task_fidelity(TaskInfo("detection", False, "", YOLOV8), ref, new)
    assert metrics["box_f1"] == 0.0 and metrics["cosine_similarity"] == 0.0
    assert metrics["sqnr_db"] == SQNR_FLOOR_DB and metrics["sqnr_db_tensor"] == SQNR_FLOOR_DB
    assert any("NaN" in note for note in metrics["fidelity_notes"])
    logits = [[np.eye(5, dtype=np.float32)[i % 5][None] for i in range(6)]]
    broken = [[a.copy() for a in logits[0]]]
    broken[0][0][0, 1] = np.nan
    info = TaskInfo("classification", False, "", output=0)
    assert task_fidelity(info, logits, broken)[0]["top1_agreement"] == 0.0


# ------------------------------------------------------------------------------ other tasks

def test_classification_is_inferred_and_top1_agreement_counts_changed_argmaxes():
    rng = np.random.default_rng(0)
    ref = [[rng.normal(size=(1, 10)).astype(np.float32) for _ in range(20)]]
    info = infer_task("auto", IMAGE, outs(ref, ["logits"]), ref)
    assert (info.task, info.output, info.inferred) == ("classification", 0, True)
    assert "10 scores" in info.why
    new = [[a.copy() for a in ref[0]]]
    for a in new[0][:5]:
        a[0, (np.argmax(a) + 1) % 10] = a.max() + 1
    metrics, not_measured = task_fidelity(info, ref, new)
    assert metrics["top1_agreement"] == 0.75 and metrics["primary_metric"] == "top1_agreement"
    assert metrics["box_f1"] is None and "box_f1" not in not_measured


def test_a_ctc_recognizer_is_classification_per_position():
    # An OCR recognizer ([1, T, 6625] softmax, T from the image width) was read as regression and
    # gated on SQNR; what its users read is the character at each position.
    rng = np.random.default_rng(5)

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)

    ref = [[softmax(rng.normal(size=(1, t, 40)) * 3) for t in (25, 40, 33)]]
    inputs = [("x", ("batch", 3, 48, "width"), "float32")]
    info = infer_task("auto", inputs, [("softmax_out", ("batch", "t", 40), "float32")], ref)
    assert (info.task, info.output, info.per_position) == ("classification", 0, True)
    assert "probability distributions" in info.why and "per position" in info.why
    new = [[a.copy() for a in ref[0]]]
    for p in range(5):                          # 5 of 98 positions change their character
        row = new[0][1][0, p]
        row[(np.argmax(row) + 1) % 40] = row.max() + 0.5
    metrics, _ = task_fidelity(info, ref, new)
    assert metrics["top1_agreement"] == pytest.approx(1 - 5 / 98)
    assert metrics["primary_metric"] == "top1_agreement"
    logits = [[rng.normal(size=(1, 12, 9)).astype(np.float32) for _ in range(3)]]
    named = infer_task("auto", inputs, [("logits", ("batch", 12, 9), "float32")], logits)
    assert named.per_position and "named like class scores" in named.why
    plain = infer_task("auto", inputs, [("features", ("batch", 12, 9), "float32")], logits)
    assert plain.task == "regression"
    declared = infer_task("classification", inputs, [("features", ("batch", 12, 9), "float32")], logits)
    assert declared.per_position and "each position" in declared.why


def test_token_ids_with_hidden_states_are_an_embedding_not_a_sequence():
    rng = np.random.default_rng(1)
    inputs = [("input_ids", ("batch", "seq"), "int64"), ("attention_mask", ("batch", "seq"), "int64")]
    hidden = [rng.normal(size=(1, t, 32)).astype(np.float32) for t in (5, 9, 7)]     # dynamic T
    pooled = [h.mean(1) for h in hidden]
    ref = [hidden, pooled]
    graph = [("last_hidden_state", ("batch", "seq", 32), "float32"), ("pooler_output", ("batch", 32), "float32")]
    info = infer_task("auto", inputs, graph, ref)
    assert (info.task, info.output) == ("embedding", 0) and "last_hidden_state" in info.why
    new = [[h.copy() for h in hidden], pooled]
    new[0][0][0, 0] = -new[0][0][0, 0]                        # one of 5 rows reversed in sample 0
    metrics, _ = task_fidelity(info, ref, new)
    assert metrics["cosine_similarity"] == pytest.approx((3 / 5 + 1 + 1) / 3)
    assert metrics["primary_metric"] == "cosine_similarity"
    bare = infer_task("auto", inputs[:1], [("output", ("batch", 32), "float32")], [pooled])
    assert bare.task == "embedding" and "token-id input 'input_ids'" in bare.why


def test_segmentation_is_inferred_and_agreement_is_per_pixel():
    rng = np.random.default_rng(2)
    ref = [[rng.normal(size=(1, 5, 32, 32)).astype(np.float32) for _ in range(4)]]
    info = infer_task("auto", IMAGE, outs(ref, ["masks"]), ref)
    assert (info.task, info.output, info.axis) == ("segmentation", 0, 1) and "5-class map" in info.why
    new = [[a.copy() for a in ref[0]]]
    new[0][0][0, :, :8, :] = new[0][0][0, ::-1, :8, :] * 0 + np.arange(5)[:, None, None]  # 8 rows -> class 4
    changed = int(np.sum(np.argmax(ref[0][0][0, :, :8, :], 0) != 4))
    metrics, _ = task_fidelity(info, ref, new)
    assert metrics["top1_agreement"] == pytest.approx(1 - changed / (4 * 32 * 32))
    nhwc = [[np.moveaxis(a, 1, -1) for a in ref[0]]]
    info = infer_task("auto", [("x", (1, 64, 64, 3), "float32")], outs(nhwc), nhwc)
    assert (info.task, info.axis) == ("segmentation", -1)
    odd = [[rng.normal(size=(1, 5, 30, 30)).astype(np.float32)]]   # 64 -> 30 is no whole ratio
    assert infer_task("auto", IMAGE, outs(odd), odd).task == "regression"


def test_recurrent_outputs_are_a_sequence_and_a_scalar_output_is_regression():
    rng = np.random.default_rng(3)
    y = [rng.normal(size=(1, 12, 16)).astype(np.float32) for _ in range(3)]
    hn = [rng.normal(size=(1, 1, 16)).astype(np.float32) for _ in range(3)]
    inputs = [("x", ("batch", 12, 8), "float32")]
    info = infer_task("auto", inputs, [("y", ("batch", 12, 16), "float32"), ("hn", (1, "batch", 16), "float32")],
                      [y, hn])
    assert info.task == "sequence" and "'hn'" in info.why
    by_shape = infer_task("auto", inputs + [("state_in", (1, 4, 16), "float32")],
                          [("out", ("batch", 12, 16), "float32"), ("s", (1, 4, 16), "float32")], [y, hn])
    assert by_shape.task == "sequence" and "shape of an input" in by_shape.why
    value = [[rng.normal(size=(1, 1)).astype(np.float32) for _ in range(3)]]
    info = infer_task("auto", IMAGE, outs(value), value)
    assert info.task == "regression" and task_fidelity(info, value, value)[0]["primary_metric"] == "sqnr_db"


def test_per_channel_sqnr_skips_constant_channels_and_says_how_many():
    rng = np.random.default_rng(5)
    ref = [[np.array([[rng.normal(), 3.0, rng.normal() * 100, 0.0]], dtype=np.float32) for _ in range(50)]]
    new = [[a + np.float32([0.1, 0.5, 0.1, 0.0]) for a in ref[0]]]        # the constant channel moves too
    metrics, _ = task_fidelity(TaskInfo("regression", True, ""), ref, new)
    assert metrics["sqnr_channels_skipped"] == 2 and metrics["sqnr_worst_channel"] == 0
    assert metrics["sqnr_db"] == pytest.approx(10 * np.log10(np.var(np.stack(ref[0])[:, 0, 0], dtype=np.float64)
                                                             / 0.01), abs=0.05)
    flat = [[np.full((1, 3), 2.0, dtype=np.float32)] * 4]
    metrics, not_measured = task_fidelity(TaskInfo("regression", True, ""), flat, flat)
    assert metrics["sqnr_db"] is None and "constant" in not_measured["sqnr_db"]


def test_integer_outputs_compare_exactly_and_an_empty_set_is_not_measured():
    labels = [[np.array([i % 3], dtype=np.int64) for i in range(6)]]
    new = [[a.copy() for a in labels[0]]]
    new[0][0][0] = 2
    info = TaskInfo("classification", False, "", output=0)
    metrics, not_measured = task_fidelity(info, labels, new)
    assert metrics["top1_agreement"] == pytest.approx(5 / 6) and metrics["exact_agreement"] == pytest.approx(5 / 6)
    assert metrics["cosine_similarity"] is None and "no float output" in not_measured["cosine_similarity"]
    metrics, not_measured = task_fidelity(info, [[]], [[]])
    assert metrics["top1_agreement"] is None and "no samples" in not_measured["top1_agreement"]
    assert set(not_measured) == {"top1_agreement", "cosine_similarity", "sqnr_db", "sqnr_db_tensor"}


# ------------------------------------------------------------------------------ a trained detector

@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory):
    """The tiny YOLOv8-style digits detector as ONNX, 48 held-out canvases and their true boxes."""
    pytest.importorskip("torch")
    import detector

    folder = tmp_path_factory.mktemp("detector")
    path = detector.export_onnx(detector.train_detector(seed=0), folder / "detector.onnx")
    x, truth = detector.canvases(48, seed=7, split="test")
    return path, x, truth


def outputs_of(path, x: np.ndarray) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [[session.run(None, {"images": x[i:i + 1]})[0] for i in range(len(x))]]


def test_a_trained_detector_is_recognised_and_its_int8_drift_measured(detector_onnx, tmp_path):
    import detector
    import onnx
    from onnx import helper, numpy_helper

    from edgegate.stages.fidelity import detect, match_count

    path, x, truth = detector_onnx
    ref = outputs_of(path, x)
    graph = onnx.load(str(path))
    inputs = [(i.name, tuple(d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim), "float32")
              for i in graph.graph.input]
    outputs = [(o.name, tuple(d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim), "float32")
               for o in graph.graph.output]
    info = infer_task("auto", inputs, outputs, ref)
    assert info.task == "detection" and info.layout == DetectionLayout("yolov8", 0), info.why
    assert "[14, 256]" in info.why

    found = [detect(info.layout, [ref[0][i]])[0] for i in range(len(x))]      # a real detector
    tp = sum(match_count((np.concatenate([t[:, 1:3] - t[:, 3:5] / 2, t[:, 1:3] + t[:, 3:5] / 2], 1), None,
                          t[:, 0].astype(int)), f, 0.5) for t, f in zip(truth, found))
    n_truth, n_found = sum(len(t) for t in truth), sum(len(f[0]) for f in found)
    assert 2 * tp / (n_truth + n_found) > 0.6, (tp, n_truth, n_found)

    metrics, _ = task_fidelity(info, ref, ref)
    assert metrics["box_f1"] == 1.0 and metrics["box_f1_detections_fp32"] == n_found

    int8 = _static_int8_on_canvases(path, tmp_path / "detector.int8.onnx")
    metrics, not_measured = task_fidelity(info, ref, outputs_of(int8, x))
    assert 0.0 <= metrics["box_f1"] <= 1.0 and not_measured == {}
    assert metrics["sqnr_db"] < metrics["sqnr_db_tensor"]              # the worst channel, not the tensor,
    assert metrics["sqnr_worst_channel"] >= 4                           # is a class score (41.9 vs 8.9 dB here)

    concat = next(n for n in graph.graph.node if n.output[0] == "output0")    # scores zeroed in the graph
    graph.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    graph.graph.node.append(helper.make_node("Mul", [concat.input[-1], "zero"], ["scores_zeroed"]))
    concat.input[-1] = "scores_zeroed"
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    metrics, _ = task_fidelity(info, ref, outputs_of(broken, x))
    assert metrics["box_f1"] < 0.5 and metrics["box_f1_detections_artifact"] == 0


def test_whole_tensor_sqnr_and_cosine_on_noise_and_on_per_sample_shapes():
    rng = np.random.default_rng(0)
    ref = [[rng.standard_normal((1, 10)) for _ in range(50)]]
    info = infer_task("auto", IMAGE, outs(ref, ["logits"]), ref)
    same, _ = task_fidelity(info, ref, ref)
    assert same["top1_agreement"] == 1.0 and same["sqnr_db_tensor"] == float("inf")
    noisy = [[r + 0.1 * rng.standard_normal(r.shape) for r in ref[0]]]
    got, _ = task_fidelity(info, ref, noisy)
    assert 15 < got["sqnr_db_tensor"] < 25                  # signal 1, noise 0.01 -> ~20 dB
    assert got["cosine_similarity"] < 1.0
    boxes = [[np.ones((1, n, 4)) for n in (3, 5)]]        # a per-sample box count (dynamic shape)
    info = TaskInfo("regression", False, "declared")
    det, _ = task_fidelity(info, boxes, [[b.copy() for b in boxes[0]]])
    assert det["top1_agreement"] is None and det["cosine_similarity"] == pytest.approx(1.0)


def test_the_search_scores_a_detector_by_box_f1_as_the_gate_does(detector_onnx, tmp_path):
    # The precision search judged every model by output 0's whole-tensor SQNR against its own 30 dB
    # default, whatever the gate then checked: a detector whose class scores collapsed could meet
    # the search's budget. It now scores candidates with the gate's task metrics and limits.
    import onnx
    from onnx import helper, numpy_helper

    from edgegate.config.load import Limit
    from edgegate.data.sources import Dataset
    from edgegate.stages.sensitivity import Scorer, budget_for
    from edgegate.targets.onnxruntime import OrtRunner

    path, x, _ = detector_onnx
    ref = outputs_of(path, x)
    graph = onnx.load(str(path))
    shapes = [(v.name, tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim), "float32")
              for v in (*graph.graph.input, *graph.graph.output)]
    info = infer_task("auto", shapes[:1], shapes[1:], ref)
    scorer = Scorer(path, Dataset({"images": x}, None, {}), lambda p: OrtRunner(p, 1), task=info)
    assert scorer.primary == "box_f1" and not scorer.classes

    def builtin(name, value):
        return Limit(name, value, "built-in x86-cpu profile", None, builtin=True)

    limits = {"min_box_f1": builtin("min_box_f1", 0.95), "min_top1_agreement": builtin("min_top1_agreement", 0.99),
              "min_sqnr_db": builtin("min_sqnr_db", 20.0)}
    budget = budget_for(limits, False, scorer.classes, scorer.primary)
    assert (budget.kind, budget.value, budget.also) == ("box_f1", 0.95, ())

    concat = next(n for n in graph.graph.node if n.output[0] == "output0")     # scores zeroed
    graph.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    graph.graph.node.append(helper.make_node("Mul", [concat.input[-1], "zero"], ["scores_zeroed"]))
    concat.input[-1] = "scores_zeroed"
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    q = scorer.score(broken)
    gate, _ = task_fidelity(info, ref, outputs_of(broken, x))
    assert q.box_f1 == gate["box_f1"] < 0.5 and q.sqnr_db == pytest.approx(gate["sqnr_db"])
    assert budget.met(q) is False and budget.shortfall(q) > 0.45
    assert budget.met(scorer.score(path)) is True
    # a limit the repository sets applies to every model, as in the gate: it joins the budget
    limits["min_cosine_similarity"] = Limit("min_cosine_similarity", 0.999, ".edgegate/policy.yml", 4)
    assert [b.kind for b in budget_for(limits, False, False, "box_f1").also] == ["cosine_similarity"]
    labelled = budget_for(limits, True, True, "top1_agreement")
    assert labelled.kind == "accuracy_drop_pp"
    assert [b.kind for b in labelled.also] == ["disagreement_pp", "cosine_similarity"]


# ------------------------------------------------------------------------------ a one-channel probability map

def ink_map_onnx(path, blur_gain: float = 1.0, seed: int = 0):
    """A tiny conv net with a sigmoid one-channel output [N, 1, 64, 64], like a text detector's
    probability map: where the digits' ink is (3x3 blur above 0.3) on examples/detector.py's
    canvases. Weights are set, not trained (the map only has to mean something); ``blur_gain``
    scales the blur filter (1: the faithful model, else a broken artifact of it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (0.2 * rng.standard_normal((4, 1, 3, 3))).astype(np.float32)
    w1[0] = blur_gain / 9.0
    w2 = np.array([12.0, 0.5, -0.5, 0.3], np.float32).reshape(1, 4, 1, 1)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (np.zeros(4, np.float32), "b1"),
                                                          (w2, "w2"), (np.array([-3.6], np.float32), "b2"))]
    nodes = [helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Sigmoid", ["c2"], ["prob"], name="sigmoid")]
    graph = helper.make_graph(nodes, "ink", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                           ["batch", 1, 64, 64])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1, 64, 64])],
                              inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_one_channel_probability_map_is_gated_on_mask_iou_and_a_broken_artifact_fails(tmp_path):
    # RapidOCR's text detector ([1, 1, H, W] sigmoid map) failed at -0.0 dB: the worst-"channel"
    # SQNR took the image rows as channels and a background row had no variance. One channel is
    # the whole map now, and such a map is gated on what a user reads: its thresholded foreground.
    import detector

    from edgegate.config.load import Limit
    from edgegate.stages.sensitivity import Budget, Quality, budget_for

    x, _ = detector.canvases(24, seed=7, split="test")
    path = ink_map_onnx(tmp_path / "ink.onnx")
    ref = outputs_of(path, x)
    shapes = [("images", ("batch", 1, 64, 64), "float32")], [("prob", ("batch", 1, 64, 64), "float32")]
    info = infer_task("auto", *shapes, ref)
    assert (info.task, info.mask, info.output, info.primary) == ("segmentation", True, 0, "mask_iou"), info.why
    assert "one-channel map" in info.why and "thresholded at 0.5" in info.why
    paddle = [("x", ("p2o.DynamicDimension.0", 1, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"), "float32")], \
        [("sigmoid_0.tmp_0", ("p2o.DynamicDimension.3", 1, "p2o.DynamicDimension.4", "p2o.DynamicDimension.5"), "float32")]
    assert infer_task("auto", *paddle, ref).mask        # PP-OCR's det: dynamic H, W named apart
    same, _ = task_fidelity(info, ref, ref)
    assert same["mask_iou"] == 1.0 and same["primary_metric"] == "mask_iou"
    assert 0.02 < same["mask_foreground_fp32"] / (24 * 64 * 64) < 0.5      # the map has ink and background

    int8 = _static_int8_on_canvases(path, tmp_path / "ink.int8.onnx")
    faithful, not_measured = task_fidelity(info, ref, outputs_of(int8, x))
    broken, _ = task_fidelity(info, ref, outputs_of(ink_map_onnx(tmp_path / "b.onnx", blur_gain=0.7), x))
    assert not_measured == {}
    assert faithful["mask_iou"] >= 0.9 > broken["mask_iou"], (faithful["mask_iou"], broken["mask_iou"])
    assert broken["mask_agreement"] > broken["mask_iou"]       # background agreement flatters the map
    # one channel is the whole map: its SQNR is the whole tensor's (centred), never a row's
    assert faithful["sqnr_worst_channel"] == 0 and faithful["sqnr_db"] > 5

    builtin = {n: Limit(n, v, "built-in x86-cpu profile", None, builtin=True)
               for n, v in (("min_mask_iou", 0.9), ("min_top1_agreement", 0.99), ("min_sqnr_db", 20.0))}
    budget = budget_for(builtin, labelled=False, classes=False, primary=info.primary)
    assert (budget.kind, budget.value, budget.also) == ("mask_iou", 0.9, ())

    def quality(iou):
        return Quality(None, None, None, None, 0.0, mask_iou=iou)

    assert budget.met(quality(faithful["mask_iou"])) and not budget.met(quality(broken["mask_iou"]))
    empty = [[np.zeros_like(a) for a in ref[0]]]              # no foreground: never a pass
    metrics, not_measured = task_fidelity(info, empty, empty)
    assert metrics["mask_iou"] is None and "no pixel above 0.5" in not_measured["mask_iou"]
    logits = [[a * 8 - 4 for a in ref[0]]]                    # one channel, not probabilities
    assert not infer_task("auto", *shapes, logits).mask
    with pytest.raises(ConfigError, match="not in \\[0, 1\\]") as err:
        infer_task("segmentation", *shapes, logits)
    assert "sigmoid" in err.value.fix
    assert Budget("sqnr_db", 20, "").shortfall(Quality(None, None, None, float("inf"), 0.0)) == float("-inf")
    assert Budget("disagreement_pp", 1, "").shortfall(Quality(None, None, 0.5, None, 0.0)) == pytest.approx(49)
    drop = Budget("accuracy_drop_pp", 1, "")                   # at most: an inf drop is infinitely short
    assert drop.shortfall(Quality(None, float("inf"), None, None, 0.0)) == float("inf")


def test_the_channel_axis_of_maps_sequences_and_heads():
    from edgegate.stages.fidelity import _channel_axis

    assert _channel_axis((1, 1, 160, 160)) is None          # one channel: the whole map, never its rows
    assert _channel_axis((1, 64, 80, 80)) == 1              # NCHW
    assert _channel_axis((1, 160, 160, 1)) is None          # NHWC, one channel
    assert _channel_axis((1, 80, 80, 64)) == 3              # NHWC
    assert _channel_axis((1, 3, 4, 4)) == 1                 # small NCHW stays NCHW
    assert _channel_axis((1, 84, 8400)) == 1                # YOLOv8 [N, 4+nc, A]
    assert _channel_axis((1, 25, 96)) == 1 and _channel_axis((1, 96, 25)) == 2   # [N, L, C] / [N, C, L]
    rng = np.random.default_rng(0)
    ref = [[np.where(np.arange(16)[:, None] < 4, 0.0, rng.random((16, 16)))[None, None] for _ in range(3)]]
    new = [[r + 0.01 * rng.standard_normal(r.shape) for r in ref[0]]]   # rows 0-3 constant background
    metrics, _ = task_fidelity(TaskInfo("regression", False, "declared"), ref, new)
    assert metrics["sqnr_worst_channel"] == 0 and metrics["sqnr_db"] > 20 and metrics["sqnr_channels_skipped"] == 0


def _static_int8_on_canvases(path, int8):
    """quantize_static's defaults (QDQ) calibrated on 16 training canvases of the detector data."""
    import detector
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    calibration, _ = detector.canvases(16, seed=11, split="train")

    class Canvases(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"images": calibration[i:i + 1]} for i in range(len(calibration)))

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(path), str(int8), Canvases(), quant_format=QuantFormat.QDQ)
    return int8
