"""Task-aware, label-free fidelity: how closely an artifact's outputs follow the FP32 model's
own outputs, measured the way the model's task uses them.

What the task is, when the user says ``auto`` (first rule that holds wins; shapes are the
per-sample shapes of the FP32 outputs on the evaluation data, without a leading batch axis of
1, or the graph's shapes when there is no sample):

1. **detection** -- one output shaped like a YOLO head, whose values look like one:
   YOLOv8 ``[4+nc, A]`` (A >= 100 anchors, 4+nc <= A/4) or transposed ``[A, 4+nc]``; YOLOv5
   ``[A, 5+nc]``; or SSD, two outputs ``[A, 4]`` (boxes) and ``[A, C]`` (scores). The score
   channels must lie in [0, 1] on every sample (sigmoid/softmax applied in the graph) and, for
   YOLO, the box channels must reach values above 1 and above the scores (pixel boxes). A
   channels-last ``[A, 5+nc]`` head is read as YOLOv5 when its column 4 behaves as an
   objectness (the class columns fire where it fires, or are not pushed to 0 on background
   anchors as YOLOv5's unsupervised class scores are); otherwise as a transposed YOLOv8. SSD
   scores whose rows sum to 1 (softmax) have column 0 read as the background class.
2. **classification** -- the first output is one vector ``[C]`` (C > 1) of floats per sample,
   not named like an embedding, and the inputs are not integer token ids (unless that output
   is named like logits/probabilities).
3. **embedding** -- a float output named like *embed*/*pool*/*sentence*/*last_hidden_state*
   shaped ``[D]`` or ``[T, D]``.
4. **classification per position** -- a float output ``[T, C]`` (C > 1) whose rows are
   probability distributions on every inspected sample (in [0, 1], summing to 1: a CTC text
   recognizer, a softmaxed tagger), or that is named like logits/probabilities: top-1
   agreement is counted at each of the T positions.
5. **sequence** -- several outputs, one with a time axis (rank >= 2 per sample) and another
   that looks like a recurrent state: named state/hidden/cell/h/c/hn/cn/h0/c0/hx/cx (as a
   whole word of the name), or shaped exactly like one of the inputs.
6. **embedding** -- int32/int64 token-id inputs (rank <= 2) and a float output ``[D]`` or
   ``[T, D]``.
7. **segmentation** -- an output ``[C, H, W]`` (or ``[H, W, C]``) with C > 1, H, W > 1, whose
   H, W equal, or are a whole fraction or multiple of, the spatial size of an image input.
8. **segmentation, one-channel mask** -- an output ``[1, H, W]``, ``[H, W, 1]`` or ``[H, W]``
   (H, W > 1) spatially matching an image input like rule 7 (or with dynamic H, W in the graph
   where the image input has dynamic H, W too), whose values lie in [0, 1] on every
   inspected sample: a probability map (a text detector's, a binary segmenter's). A user
   thresholds it, so it is gated on the foreground IoU of both maps thresholded at
   MASK_THRESHOLD (argmax over one channel would agree everywhere, whatever the artifact does).
9. otherwise **regression**.

Metrics (``task_fidelity``): top-1 agreement (classification; per pixel for segmentation),
mask IoU and per-pixel mask agreement (one-channel probability maps, thresholded), box F1 after decoding, confidence filtering, class-wise NMS and greedy matching (detection),
cosine similarity, per-channel SQNR (worst channel, so a small score channel cannot hide under
large box channels; the channel axis is ``_channel_axis``'s) and the whole-tensor SQNR. An artifact that puts NaN/inf where the FP32
model has finite values gets the failure value of every metric that reads that output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edgegate.errors import ConfigError, InputError

TASKS = ("classification", "detection", "embedding", "segmentation", "regression", "sequence")
LAYOUTS = ("yolov8", "yolov5", "ssd")
BOX_FORMATS = ("xywh", "xyxy")
PRIMARY_METRIC = {"classification": "top1_agreement", "segmentation": "top1_agreement",
                  "detection": "box_f1", "embedding": "cosine_similarity",
                  "regression": "sqnr_db", "sequence": "sqnr_db"}
MASK_METRIC = "mask_iou"        # the primary metric of a one-channel probability map
MASK_THRESHOLD = 0.5            # a probability map's pixel is foreground above this
SQNR_FLOOR_DB = -100.0          # reported instead of -inf (NaN or exploding noise)
MIN_ANCHORS = 100               # a YOLO/SSD head has at least this many anchors
MAX_NMS_BOXES = 30000           # candidates per image fed to NMS, highest scores first
MAX_DETECTIONS = 300            # boxes kept per image after NMS (Ultralytics' max_det)
UNIT_EPS = 1e-4                 # slack on "values in [0, 1]"
INSPECT_SAMPLES = 32            # samples whose values infer_task looks at

_EMBED_NAME = re.compile(r"embed|pool|sentence|last_hidden_state", re.IGNORECASE)
_LOGITS_NAME = re.compile(r"logit|prob|class|score", re.IGNORECASE)
_POSITION_NAME = re.compile(r"logit|prob", re.IGNORECASE)
DISTRIBUTION_EPS = 1e-3         # slack on "each row sums to 1"
_STATE_WORDS = {"state", "states", "hidden", "cell", "h", "c", "hn", "cn", "h0", "c0", "hx", "cx"}
_TOKEN_DTYPES = {"int32", "int64"}


@dataclass(frozen=True)
class DetectionLayout:
    kind: str                           # "yolov8" | "yolov5" | "ssd"
    output: int                         # index of the (shared or boxes) output tensor
    scores_output: int | None = None    # ssd: index of the scores output
    box_format: str = "xywh"            # "xywh" (center x, center y, w, h) or "xyxy"
    channels_first: bool = True         # yolo: [N, 4+nc, A] (True) or [N, A, 4+nc]; ssd: read from the shapes
    conf_threshold: float = 0.25
    iou_threshold: float = 0.45         # NMS
    match_iou: float = 0.5              # a box matches the reference box of the same class at IoU >= this
    background_class: int | None = None  # ssd: a score column that is background, never a detection


@dataclass(frozen=True)
class TaskInfo:
    task: str                           # one of TASKS
    inferred: bool                      # False when the user declared it
    why: str                            # one sentence for the report: what was inferred and from what
    layout: DetectionLayout | None = None
    output: int | None = None           # the output the task metric reads (classification, embedding, segmentation)
    axis: int = 1                       # segmentation: the class axis of that output's sample arrays (batch included)
    per_position: bool = False          # classification: one class vector per position ([T, C]), argmax on the last axis
    mask: bool = False                  # segmentation: a one-channel probability map, thresholded at MASK_THRESHOLD

    @property
    def primary(self) -> str:
        """The fidelity metric this task gates on (the one place it is derived)."""
        return MASK_METRIC if self.mask else PRIMARY_METRIC[self.task]


# ------------------------------------------------------------------------------ shapes and values

def _core(shape: tuple) -> tuple:
    """A per-sample shape without its leading batch axis (1 or symbolic)."""
    shape = tuple(shape)
    if len(shape) >= 2 and (shape[0] == 1 or isinstance(shape[0], str)):
        return shape[1:]
    return shape


def _dtype(dtype: object) -> str:
    text = str(dtype).lower()
    return text[7:-1] if text.startswith("tensor(") else text


def _is_int(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iub"


def _sample_shapes(outputs: list, ref: list) -> list[tuple]:
    return [_core(ref[k][0].shape) if k < len(ref) and ref[k] else _core(outputs[k][1])
            for k in range(len(outputs))]


def _rows(ref: list, k: int, shape: tuple, channels_first: bool) -> np.ndarray | None:
    """The first samples of output k as one (anchors, channels) float64 matrix."""
    mats = []
    for arr in (ref[k][:INSPECT_SAMPLES] if k < len(ref) else []):
        arr = np.asarray(arr, dtype=np.float64)
        if _core(arr.shape) != shape:
            return None
        mat = arr.reshape(shape)
        mats.append(mat.T if channels_first else mat)
    return np.concatenate(mats) if mats else None


def _in_unit(values: np.ndarray) -> bool:
    return bool(values.size and np.all(np.isfinite(values)) and values.min() >= -UNIT_EPS
                and values.max() <= 1 + UNIT_EPS)


def _words(name: str) -> set[str]:
    return {w.lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w}


# ------------------------------------------------------------------------------ task inference

def recognise_layout(outputs: list, ref: list, strict: bool = True) -> tuple[DetectionLayout, str] | None:
    """A detection layout that the output shapes and the FP32 values fit, and why; or None.

    ``strict`` (auto) also wants >= MIN_ANCHORS anchors and pixel-sized boxes; without it
    (the user declared detection) scores in [0, 1] and a plausible shape are enough."""
    shapes = _sample_shapes(outputs, ref)
    min_anchors = MIN_ANCHORS if strict else 2
    names = [o[0] for o in outputs]
    for k, shape in enumerate(shapes):                                       # YOLO: one shared head
        if len(shape) != 2 or not all(isinstance(d, int) for d in shape):
            continue
        for channels_first in (True, False):
            width, anchors = shape if channels_first else shape[::-1]
            if width < 5 or anchors < min_anchors or width * 4 > anchors:
                continue
            mat = _rows(ref, k, shape, channels_first)
            if mat is None or not _in_unit(mat[:, 4:]):
                continue
            box_max, score_max = float(np.max(mat[:, :4])), float(np.max(mat[:, 4:]))
            if strict and not (box_max > 1.0 and box_max > score_max):
                continue
            kind = "yolov8"
            if not channels_first and width >= 6 and _looks_like_objectness(mat[:, 4], mat[:, 5:]):
                kind = "yolov5"
            nc = width - (5 if kind == "yolov5" else 4)
            layout = DetectionLayout(kind=kind, output=k, channels_first=channels_first)
            order = f"[{width}, {anchors}]" if channels_first else f"[{anchors}, {width}]"
            parts = "4 box, 1 objectness" if kind == "yolov5" else "4 box"
            why = (f"output '{names[k]}' is {order} per sample: read as a {kind.replace('yolo', 'YOLO')} head "
                   f"({parts} and {nc} class-score channels in [0, 1], boxes up to {box_max:.3g}, "
                   f"{anchors} anchors, xywh)")
            return layout, why
    for b, box_shape in enumerate(shapes):                                  # SSD: boxes + scores
        if len(box_shape) != 2 or 4 not in box_shape:
            continue
        box_first = box_shape[-1] != 4
        anchors = box_shape[-1] if box_first else box_shape[0]
        if not isinstance(anchors, int) or anchors < min_anchors:
            continue
        for s, score_shape in enumerate(shapes):
            if s == b or len(score_shape) != 2 or anchors not in score_shape:
                continue
            score_first = score_shape[0] != anchors
            scores = _rows(ref, s, score_shape, score_first)
            boxes = _rows(ref, b, box_shape, box_first)
            if scores is None or boxes is None or not _in_unit(scores):
                continue
            if _in_unit(boxes) and boxes.shape[1] == scores.shape[1] and s < b:
                continue                                                  # the first of two look-alikes is boxes
            ordered = np.mean((boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])) >= 0.99
            fmt = "xyxy" if ordered else "xywh"
            softmax = scores.shape[1] > 1 and np.allclose(scores.sum(1), 1.0, atol=1e-3)
            layout = DetectionLayout(kind="ssd", output=b, scores_output=s, box_format=fmt,
                                     channels_first=False, background_class=0 if softmax else None)
            why = (f"outputs '{names[b]}' [{anchors}, 4] and '{names[s]}' [{anchors}, "
                   f"{scores.shape[1]}] per sample: read as an SSD head (boxes {fmt}, scores in [0, 1]"
                   + (", rows sum to 1 so column 0 is background)" if softmax else ")"))
            return layout, why
    return None


def _looks_like_objectness(column: np.ndarray, classes: np.ndarray) -> bool:
    """YOLOv5's class scores are trained only where an object is: they fire with the objectness
    column, and are not pushed towards 0 on background anchors (YOLOv8's all are)."""
    best = classes.max(1)
    firing = column > 0.25
    cofire = bool(firing.any()) and float(np.mean(best[firing] > 0.25)) >= 0.5
    return cofire or float(np.median(best)) >= 0.1


def _vector_output(shape: tuple) -> bool:
    return len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 1


def _image_sizes(inputs: list) -> list[tuple[str, tuple]]:
    """(name, spatial H, W) of every 4-D (image) input, NCHW or NHWC."""
    spatial = []
    for name, shape, _ in inputs:
        shape = tuple(shape)
        if len(shape) == 4:
            nhwc = isinstance(shape[3], int) and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4)
            spatial.append((name, shape[1:3] if nhwc else shape[2:4]))
    return spatial


def _fits(hw: tuple, graph_hw: tuple, in_hw: tuple) -> bool:
    """An output's H, W equal, or are a whole fraction or multiple of, an input's."""
    if all(isinstance(d, int) for d in in_hw) and all(isinstance(d, int) for d in hw):
        ratios = [h / i for h, i in zip(hw, in_hw)]
        r = ratios[0]
        whole = r >= 1 and abs(r - round(r)) < 1e-9 or r < 1 and abs(1 / r - round(1 / r)) < 1e-9
        return abs(ratios[1] - r) < 1e-9 and whole
    return tuple(graph_hw) == tuple(in_hw) and all(isinstance(d, str) for d in in_hw)


def _map_hw(shape: tuple) -> tuple[int, tuple] | None:
    """(channel axis in the batched sample array, H, W) of a one-channel map's per-sample shape
    [1, H, W], [H, W, 1] or [H, W]; None for another shape."""
    if not all(isinstance(d, int) for d in shape):
        return None
    if len(shape) == 3 and shape[0] == 1 and min(shape[1:]) > 1:
        return 1, shape[1:]
    if len(shape) == 3 and shape[2] == 1 and min(shape[:2]) > 1:
        return -1, shape[:2]
    if len(shape) == 2 and min(shape) > 1:
        return -1, shape
    return None


def _mask_output(outputs: list, inputs: list, shapes: list, ref: list, need_unit: bool = True
                 ) -> tuple[int, bool, str] | None:
    """(output index, values in [0, 1], why) for a one-channel map spatially matching an image
    input; with ``need_unit`` only when its values are probabilities on every inspected sample."""
    for k, shape in enumerate(shapes):
        found = _map_hw(shape)
        if found is None or not _out_is_float(outputs, ref, k):
            continue
        hw = found[1]
        graph = tuple(outputs[k][1])
        graph_hw = graph[-2:] if found[0] == 1 or len(shape) == 2 else graph[-3:-1]
        for name, in_hw in _image_sizes(inputs):
            # dynamic H, W on both sides fit too: exporters name them apart (Paddle2ONNX's
            # p2o.DynamicDimension.N), and the values in [0, 1] are checked below
            dynamic = all(isinstance(d, str) for d in (*in_hw, *graph_hw))
            if not (_fits(hw, graph_hw, in_hw) or dynamic):
                continue
            samples = [np.asarray(a, dtype=np.float64) for a in (ref[k][:INSPECT_SAMPLES] if k < len(ref) else [])]
            unit = bool(samples) and all(_in_unit(a) for a in samples)
            if need_unit and not unit:
                break
            match = (f"with dynamic H, W like input '{name}'" if dynamic and not _fits(hw, graph_hw, in_hw)
                     else f"spatially matching input '{name}'")
            return k, unit, (f"output '{outputs[k][0]}' is a one-channel map {list(shape)} per sample, "
                             f"{match}, with values in [0, 1] on the "
                             f"{len(samples)} inspected samples: a probability map, gated on the "
                             f"foreground IoU of both maps thresholded at {MASK_THRESHOLD:g}")
    return None


def _segmentation_output(outputs: list, inputs: list, shapes: list) -> tuple[int, int, str] | None:
    """(output index, class axis in the batched sample array, why) for a class map output."""
    spatial = _image_sizes(inputs)
    fits = _fits
    for k, shape in enumerate(shapes):
        if len(shape) != 3 or not all(isinstance(d, int) for d in shape):
            continue
        graph = tuple(outputs[k][1])[-3:]
        for axis, hw, graph_hw in ((1, shape[1:], graph[1:]), (-1, shape[:2], graph[:2])):
            classes = shape[0] if axis == 1 else shape[2]
            if classes < 2 or min(hw) < 2:
                continue
            for name, in_hw in spatial:
                if fits(hw, graph_hw, in_hw):
                    order = "[C, H, W]" if axis == 1 else "[H, W, C]"
                    return k, axis, (f"output '{outputs[k][0]}' is a {classes}-class map {order} "
                                     f"{list(shape)} per sample, spatially matching input '{name}'")
    return None


def infer_task(declared: str, inputs: list[tuple[str, tuple, str]], outputs: list[tuple[str, tuple, str]],
               ref_outputs: list[list[np.ndarray]], layout: DetectionLayout | None = None) -> TaskInfo:
    """The model's task: the declared one, or inferred from the graph and the FP32 outputs."""
    if declared != "auto" and declared not in TASKS:
        raise ConfigError(f"unknown task '{declared}'", field="task", value=declared,
                          fix="use auto or one of " + ", ".join(TASKS))
    names = [o[0] for o in outputs]
    if layout is not None:
        _check_layout(layout, len(outputs))
        return TaskInfo("detection", False, f"detection declared (layout {layout.kind}, output "
                        f"'{names[layout.output]}')", layout)
    if declared == "detection":
        found = recognise_layout(outputs, ref_outputs, strict=False)
        if found is None:
            raise ConfigError("task is detection but no output looks like a YOLOv8, YOLOv5 or SSD head "
                              "with scores in [0, 1]", field="detection",
                              value=[f"{n} {list(s)}" for n, s, _ in outputs],
                              fix="declare detection: {layout: yolov8|yolov5|ssd, output: N, ...} "
                                  "(scores_output for ssd, channels_first, box_format: xywh|xyxy)")
        return TaskInfo("detection", False, "detection declared; " + found[1], found[0])

    shapes = _sample_shapes(outputs, ref_outputs)
    float_out = [k for k in range(len(outputs)) if _out_is_float(outputs, ref_outputs, k)]
    tokens = [n for n, s, d in inputs if _dtype(d) in _TOKEN_DTYPES and len(tuple(s)) <= 2]
    embed_named = [k for k in float_out if _EMBED_NAME.search(names[k]) and len(shapes[k]) in (1, 2)]
    first_vector = bool(outputs) and 0 in float_out and _vector_output(shapes[0])
    if declared != "auto":
        return _declared(declared, inputs, outputs, shapes, float_out, embed_named, ref_outputs)

    found = recognise_layout(outputs, ref_outputs, strict=True)
    if found is not None:
        return TaskInfo("detection", True, "detection: " + found[1], found[0])
    if first_vector and not _EMBED_NAME.search(names[0]) and (not tokens or _LOGITS_NAME.search(names[0])):
        return TaskInfo("classification", True, f"classification: output '{names[0]}' is one vector "
                        f"of {shapes[0][0]} scores per sample", output=0)
    if embed_named:
        k = embed_named[0]
        return TaskInfo("embedding", True, f"embedding: output '{names[k]}' {list(shapes[k])} is "
                        "named like an embedding", output=k)
    positions = _position_scores(outputs, ref_outputs, shapes, float_out)
    if positions is not None:
        return TaskInfo("classification", True, positions[1], output=positions[0], per_position=True)
    state = _state_output(inputs, outputs, shapes)
    if state is not None:
        return TaskInfo("sequence", True, state)
    if tokens:
        rows = [k for k in float_out if len(shapes[k]) in (1, 2)]
        if rows:
            return TaskInfo("embedding", True, f"embedding: integer token-id input '{tokens[0]}' and "
                            f"float output '{names[rows[0]]}' {list(shapes[rows[0]])}", output=rows[0])
    seg = _segmentation_output(outputs, inputs, shapes)
    if seg is not None:
        return TaskInfo("segmentation", True, "segmentation: " + seg[2], output=seg[0], axis=seg[1])
    mask = _mask_output(outputs, inputs, shapes, ref_outputs)
    if mask is not None:
        return TaskInfo("segmentation", True, "segmentation (one-channel mask): " + mask[2],
                        output=mask[0], mask=True)
    return TaskInfo("regression", True, "regression: no output looks like class scores, boxes, an "
                    "embedding, a class map, a probability map or a recurrent state")


def _distributions(ref: list, k: int) -> bool:
    """Every inspected sample of output k is rows of probabilities (last axis sums to 1)."""
    samples = ref[k][:INSPECT_SAMPLES] if k < len(ref) else []
    for arr in samples:
        arr = np.asarray(arr, dtype=np.float64)
        if not _in_unit(arr) or not np.all(np.abs(arr.sum(axis=-1) - 1) <= DISTRIBUTION_EPS):
            return False
    return bool(samples)


def _position_scores(outputs: list, ref: list, shapes: list, float_out: list) -> tuple[int, str] | None:
    """(output, why) for an output of one class vector per position, [T, C]."""
    for k in float_out:
        shape = shapes[k]
        if len(shape) != 2 or not isinstance(shape[-1], int) or shape[-1] < 2:
            continue
        name = outputs[k][0]
        if _distributions(ref, k):
            how = "its rows are probability distributions"
        elif _POSITION_NAME.search(name):
            how = "it is named like class scores"
        else:
            continue
        return k, (f"classification per position: output '{name}' {list(shape)} holds {shape[-1]} class "
                   f"scores at each position ({how}); top-1 agreement is counted per position")
    return None


def _out_is_float(outputs: list, ref: list, k: int) -> bool:
    if k < len(ref) and ref[k]:
        return np.asarray(ref[k][0]).dtype.kind in "fc"
    return _dtype(outputs[k][2]).startswith(("float", "double", "bfloat"))


def _state_output(inputs: list, outputs: list, shapes: list) -> str | None:
    if len(outputs) < 2:
        return None
    input_shapes = {tuple(s) for _, s, _ in inputs}
    for k, (name, shape, _) in enumerate(outputs):
        by_name = bool(_words(name) & _STATE_WORDS) and not _EMBED_NAME.search(name)
        by_shape = tuple(shape) in input_shapes
        if not (by_name or by_shape):
            continue
        timed = [j for j in range(len(outputs)) if j != k and len(shapes[j]) >= 2]
        if timed:
            j = timed[0]
            how = "is named like a recurrent state" if by_name else "has the shape of an input (a state fed back)"
            return (f"sequence: output '{outputs[j][0]}' {list(shapes[j])} has a time axis and output "
                    f"'{name}' {how}")
    return None


def _declared(task: str, inputs: list, outputs: list, shapes: list, float_out: list, embed_named: list,
              ref: list) -> TaskInfo:
    names = [o[0] for o in outputs]
    if task == "classification":
        k = next((k for k in range(len(outputs)) if _vector_output(shapes[k])), None)
        if k is None:
            k = next((k for k in float_out if len(shapes[k]) == 2), 0)
            if len(shapes[k]) == 2:
                return TaskInfo(task, False, f"classification declared; top-1 read at each position of output "
                                f"'{names[k]}' {list(shapes[k])}", output=k, per_position=True)
        return TaskInfo(task, False, f"classification declared; top-1 read on output '{names[k]}'", output=k)
    if task == "embedding":
        rows = embed_named or [k for k in float_out if len(shapes[k]) in (1, 2)] or [0]
        return TaskInfo(task, False, f"embedding declared; cosine read on output '{names[rows[0]]}'",
                        output=rows[0])
    if task == "segmentation":
        seg = _segmentation_output(outputs, inputs, shapes)
        mask = _mask_output(outputs, inputs, shapes, ref, need_unit=False) if seg is None else None
        if mask is not None:
            if not mask[1]:
                raise ConfigError(
                    f"task is segmentation but output '{names[mask[0]]}' {list(shapes[mask[0]])} is a "
                    "one-channel map whose values are not in [0, 1]: top-1 over one channel agrees "
                    "everywhere, and a threshold needs probabilities", field="task",
                    value=[f"{n} {list(s)}" for n, s, _ in outputs],
                    fix="export the model with its sigmoid applied to that output, or declare "
                        "task: regression (gated on SQNR)")
            return TaskInfo(task, False, "segmentation declared; " + mask[2], output=mask[0], mask=True)
        if seg is None:
            k = next((k for k, s in enumerate(shapes) if len(s) == 3 and 1 not in (s[0], s[-1])), None)
            if k is None:
                raise ConfigError("task is segmentation but no output is a class map [1, C, H, W] "
                                  "(C > 1) or a one-channel probability map [1, 1, H, W]",
                                  field="task", value=[f"{n} {list(s)}" for n, s, _ in outputs],
                                  fix="declare the task the model has, or task: auto")
            seg = (k, 1, f"class axis 1 of output '{names[k]}'")
        return TaskInfo(task, False, "segmentation declared; " + seg[2], output=seg[0], axis=seg[1])
    return TaskInfo(task, False, f"{task} declared")


def _check_layout(layout: DetectionLayout, n_outputs: int) -> None:
    problems = []
    if layout.kind not in LAYOUTS:
        problems.append(f"layout '{layout.kind}' is not one of {', '.join(LAYOUTS)}")
    if layout.box_format not in BOX_FORMATS:
        problems.append(f"box_format '{layout.box_format}' is not xywh or xyxy")
    if not 0 <= layout.output < n_outputs:
        problems.append(f"output {layout.output} is not in 0..{n_outputs - 1}")
    if layout.kind == "ssd" and (layout.scores_output is None or not 0 <= layout.scores_output < n_outputs
                                 or layout.scores_output == layout.output):
        problems.append("an ssd layout needs scores_output, the index of another output")
    if problems:
        raise ConfigError("; ".join(problems), field="detection", value=layout,
                          fix="declare detection: {layout: yolov8|yolov5|ssd, output: N, "
                              "scores_output: M (ssd), box_format: xywh|xyxy}")


# ------------------------------------------------------------------------------ detection

def _xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    if box_format == "xyxy":
        return boxes
    cx, cy, w, h = boxes.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box of a (n, 4) with every one of b (m, 4): (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float,
        max_detections: int = MAX_DETECTIONS) -> np.ndarray:
    """Class-wise greedy NMS on xyxy boxes; the kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")[:MAX_NMS_BOXES]
    if order.size == 0:
        return order
    span = float(np.max(np.abs(boxes[order]))) + 1.0
    shifted = boxes + (classes.astype(np.float64) * 2 * span)[:, None]    # classes never overlap
    keep = []
    while order.size and len(keep) < max_detections:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou(shifted[best:best + 1], shifted[order])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def detect(layout: DetectionLayout, sample: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(xyxy boxes, scores, classes) after the confidence filter and NMS, per image of one
    sample's outputs. Scores are taken as they are (no sigmoid applied)."""
    head = np.asarray(sample[layout.output], dtype=np.float64)
    if layout.kind == "ssd":
        scores_all = np.asarray(sample[layout.scores_output], dtype=np.float64)
        head, scores_all = _batched(head), _batched(scores_all)
        if head.shape[-1] != 4:
            head = head.transpose(0, 2, 1)
        if scores_all.shape[1] != head.shape[1]:
            scores_all = scores_all.transpose(0, 2, 1)
        images = [(head[i], scores_all[i]) for i in range(min(len(head), len(scores_all)))]
    else:
        head = _batched(head)
        if layout.channels_first:
            head = head.transpose(0, 2, 1)
        start = 5 if layout.kind == "yolov5" else 4
        images = [(m[:, :4], m[:, start:] * (m[:, 4:5] if layout.kind == "yolov5" else 1.0)) for m in head]
    found = []
    for boxes, class_scores in images:
        if layout.background_class is not None and class_scores.shape[1] > 1:
            class_scores = class_scores.copy()
            class_scores[:, layout.background_class] = -np.inf
        classes = np.argmax(class_scores, axis=1)
        scores = class_scores[np.arange(len(classes)), classes]
        keep = np.flatnonzero(scores > layout.conf_threshold)
        boxes = _xyxy(boxes[keep], layout.box_format)
        kept = nms(boxes, scores[keep], classes[keep], layout.iou_threshold)
        found.append((boxes[kept], scores[keep][kept], classes[keep][kept]))
    return found


def _batched(arr: np.ndarray) -> np.ndarray:
    return arr[None] if arr.ndim == 2 else arr.reshape((-1,) + arr.shape[-2:])


def match_count(ref: tuple, new: tuple, match_iou: float) -> int:
    """True positives: each new box, highest score first, takes the unmatched reference box of
    its class with the highest IoU, if that IoU >= match_iou."""
    ref_boxes, _, ref_classes = ref
    new_boxes, new_scores, new_classes = new
    tp = 0
    for cls in np.unique(new_classes):
        r = ref_boxes[ref_classes == cls]
        if not len(r):
            continue
        mine = np.flatnonzero(new_classes == cls)
        mine = mine[np.argsort(-new_scores[mine], kind="stable")]
        iou = box_iou(new_boxes[mine], r)
        used = np.zeros(len(r), dtype=bool)
        for row in iou:
            row = np.where(used, -1.0, row)
            j = int(np.argmax(row))
            if row[j] >= match_iou:
                used[j] = True
                tp += 1
    return tp


def box_f1(layout: DetectionLayout, ref: list[list[np.ndarray]], new: list[list[np.ndarray]]
           ) -> tuple[float | None, int, int, str | None]:
    """(F1, FP32 detections, artifact detections, reason when None) over all samples."""
    tp = n_ref = n_new = 0
    for i in range(len(ref[0])):
        ref_images = detect(layout, [out[i] for out in ref])
        new_images = detect(layout, [out[i] for out in new])
        for j, r in enumerate(ref_images):
            n_ref += len(r[0])
            if j < len(new_images):
                tp += match_count(r, new_images[j], layout.match_iou)
        n_new += sum(len(n[0]) for n in new_images)
    if n_ref == 0:
        return None, 0, n_new, (f"the FP32 model detects no box above conf {layout.conf_threshold:g} on the "
                                f"{len(ref[0])} evaluation samples: give evaluation data with objects in "
                                "it, or lower detection.conf_threshold")
    return 2 * tp / (n_ref + n_new), n_ref, n_new, None


# ------------------------------------------------------------------------------ other metrics

def _broken(r: np.ndarray, n: np.ndarray) -> bool:
    """The artifact has NaN/inf where the FP32 output is finite."""
    if n.dtype.kind not in "fc" or r.shape != n.shape:
        return False
    return bool(np.any(~np.isfinite(n) & np.isfinite(np.asarray(r, dtype=np.float64))))


def _flat_rows(arr: np.ndarray, last: bool = False) -> np.ndarray:
    """Rows of one sample: per batch entry (classification), or per last-axis vector (embedding)."""
    arr = np.asarray(arr)
    if last:
        return arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
    return arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr.reshape(1, -1)


def agreement(ref: list[np.ndarray], new: list[np.ndarray], axis: int | None) -> float:
    """Share of rows (axis None: one score vector per batch entry) or of pixels (the argmax over
    ``axis``) where the artifact's argmax is the FP32 one; integer outputs compare exactly."""
    agree = total = 0
    for r, n in zip(ref, new):
        r, n = np.asarray(r), np.asarray(n)
        if axis is None:
            r, n = _flat_rows(r), (_flat_rows(n) if n.size else n)
            if _is_int(r) and r.shape[1] == 1:
                picked_r, picked_n = r[:, 0], (n[:, 0] if n.shape == r.shape else None)
            else:
                picked_r, picked_n = np.argmax(r, 1), (np.argmax(n, 1) if n.shape == r.shape else None)
        else:
            picked_r = np.argmax(r, axis=axis)
            picked_n = np.argmax(n, axis=axis) if n.shape == r.shape else None
        total += picked_r.size
        if picked_n is not None:
            agree += int(np.sum(picked_r == picked_n))
    return agree / total if total else 0.0


def cosine(ref: list[np.ndarray], new: list[np.ndarray], per_row: bool) -> float:
    """Mean over samples of the cosine of each sample (per_row: the mean over its last-axis rows)."""
    values = []
    for r, n in zip(ref, new):
        r64, n64 = np.asarray(r, dtype=np.float64), np.asarray(n, dtype=np.float64)
        if r64.shape != n64.shape:
            values.append(0.0)
            continue
        r64 = _flat_rows(r64, last=True) if per_row else r64.reshape(1, -1)
        n64 = n64.reshape(r64.shape)
        den = np.linalg.norm(r64, axis=1) * np.linalg.norm(n64, axis=1)
        same = np.all(r64 == n64, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = np.where(den > 0, np.sum(r64 * n64, axis=1) / np.where(den > 0, den, 1), same * 1.0)
        values.append(float(np.mean(rows)))
    return float(np.mean(values)) if values else 0.0


def _channel_axis(shape: tuple) -> int | None:
    """The channel axis of one sample's output array (batch axis first), None for one channel.

    4-D is an image-like map: NCHW, so axis 1 even when it is 1 (one channel: the whole map is
    one channel, never its rows), unless the last axis is smaller than both spatial axes (NHWC,
    e.g. [1, H, W, 1] or [1, 80, 80, 64]). Other ranks ([N, C], [N, L, C], YOLO's [N, 4+nc, A]):
    the smallest non-batch axis of size > 1 (the first of equals)."""
    if len(shape) == 4:
        axis = 3 if shape[3] < shape[1] and shape[3] < shape[2] else 1
        return axis if shape[axis] > 1 else None
    axes = range(1 if len(shape) >= 2 else 0, len(shape))
    sized = [(shape[a], a) for a in axes if shape[a] > 1]
    return min(sized)[1] if sized else None


def mask_iou(ref: list[np.ndarray], new: list[np.ndarray]) -> tuple[float | None, float | None, int, str | None]:
    """(foreground IoU, per-pixel agreement, FP32 foreground pixels, reason when None) of two
    probability maps thresholded at MASK_THRESHOLD, pooled over every sample (a shape mismatch
    counts the whole FP32 foreground as missed and every pixel as disagreeing)."""
    inter = union = agree = total = fg = 0
    for r, n in zip(ref, new):
        r_fg = np.asarray(r, dtype=np.float64) > MASK_THRESHOLD
        n = np.asarray(n, dtype=np.float64)
        fg += int(r_fg.sum())
        total += r_fg.size
        if n.shape != r_fg.shape:
            union += int(r_fg.sum())
            continue
        n_fg = n > MASK_THRESHOLD
        inter += int(np.sum(r_fg & n_fg))
        union += int(np.sum(r_fg | n_fg))
        agree += int(np.sum(r_fg == n_fg))
    pixels = agree / total if total else None
    if fg == 0:
        return None, pixels, 0, (f"the FP32 map has no pixel above {MASK_THRESHOLD:g} on the {len(ref)} "
                                 "evaluation samples, so foreground IoU says nothing: give evaluation "
                                 "data with foreground (objects, text) in it")
    return inter / union, pixels, fg, None


def channel_sqnr(ref: list[np.ndarray], new: list[np.ndarray]) -> tuple[float | None, int | None, int, str | None]:
    """(worst per-channel SQNR in dB, its channel, channels skipped as constant, note).

    Per channel: 10 log10(var(ref_c) / mean((ref_c - new_c)^2)) over every sample and position
    of that channel; inf when identical; SQNR_FLOOR_DB when the artifact is not comparable."""
    axis = _channel_axis(np.asarray(ref[0]).shape)
    count = shift = s1 = s2 = noise = None
    for r, n in zip(ref, new):
        r, n = np.asarray(r, dtype=np.float64), np.asarray(n, dtype=np.float64)
        if r.shape != n.shape:
            return SQNR_FLOOR_DB, None, 0, "the artifact's output has another shape than the FP32 one"
        if _broken(r, n):
            return SQNR_FLOOR_DB, None, 0, "the artifact's output has NaN/inf where the FP32 one is finite"
        if axis is not None and r.ndim <= axis:
            return SQNR_FLOOR_DB, None, 0, "the output's rank changes between samples"
        channels = r.shape[axis] if axis is not None else 1
        r = (np.moveaxis(r, axis, 0) if axis is not None else r).reshape(channels, -1)
        n = (np.moveaxis(n, axis, 0) if axis is not None else n).reshape(channels, -1)
        if count is not None and channels != len(count):
            return SQNR_FLOOR_DB, None, 0, "the output's channel count changes between samples"
        finite = np.isfinite(r)
        if shift is None:
            shift = np.array([row[ok].mean() if ok.any() else 0.0 for row, ok in zip(r, finite)])
            count, s1, s2, noise = (np.zeros(len(r)) for _ in range(4))
        centred = np.where(finite, r - shift[:, None], 0.0)
        count += finite.sum(1)
        s1 += centred.sum(1)
        s2 += (centred ** 2).sum(1)
        noise += np.where(finite, (r - n) ** 2, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = s1 / np.maximum(count, 1)
        var = np.maximum(s2 / np.maximum(count, 1) - mean_c ** 2, 0.0)
        mean_sq = var + (mean_c + shift) ** 2
        mse = noise / np.maximum(count, 1)
        constant = (count == 0) | (var <= 1e-12 * mean_sq)
        db = np.where(mse > 0, 10 * np.log10(var / np.where(mse > 0, mse, 1)), np.inf)
    skipped = int(constant.sum())
    if skipped == len(db):
        return None, None, skipped, None
    db = np.where(constant, np.inf, db)
    worst = int(np.argmin(db))
    return max(float(db[worst]), SQNR_FLOOR_DB), worst, skipped, None


def tensor_sqnr(ref: list[np.ndarray], new: list[np.ndarray]) -> float | None:
    """Whole-tensor SQNR: sum(ref^2) / sum((ref - new)^2) over samples (a shape mismatch counts
    its whole signal as noise); None when the signal is 0."""
    signal = noise = 0.0
    for r, n in zip(ref, new):
        r, n = np.asarray(r, dtype=np.float64).ravel(), np.asarray(n, dtype=np.float64).ravel()
        ok = np.isfinite(r)
        signal += float(np.sum(r[ok] ** 2))
        noise += float(np.sum((r[ok] - n[ok]) ** 2)) if r.shape == n.shape else float(np.sum(r[ok] ** 2))
    if noise == 0:
        return float("inf")
    if not np.isfinite(noise):
        return SQNR_FLOOR_DB
    return max(float(10 * np.log10(signal / noise)), SQNR_FLOOR_DB) if signal > 0 else None


# ------------------------------------------------------------------------------ the one entry point

KEYS = ("top1_agreement", "mask_iou", "mask_agreement", "mask_foreground_fp32", "box_f1", "box_f1_detections_fp32", "box_f1_detections_artifact",
        "cosine_similarity", "exact_agreement", "sqnr_db", "sqnr_worst_output", "sqnr_worst_channel",
        "sqnr_channels_skipped", "sqnr_db_tensor")


def task_fidelity(info: TaskInfo, ref: list[list[np.ndarray]], new: list[list[np.ndarray]],
                  only: set[str] | frozenset[str] | None = None) -> tuple[dict, dict]:
    """(metrics, not_measured) of the artifact's outputs ``new`` against the FP32 ``ref``
    (``ref[k][i]``: output k of sample i). Every key of KEYS is in metrics, with
    ``primary_metric`` (the task's gating metric) and ``fidelity_notes`` (failure values
    explained); not_measured gives the reason for each None that applies to the task.
    ``only``: compute just these metrics (the search's layer blame: what its budget reads);
    the others stay None and are not listed as not measured."""
    metrics: dict = {key: None for key in KEYS}
    metrics.update(primary_metric=info.primary, fidelity_notes=[])
    notes = metrics["fidelity_notes"]
    not_measured: dict = {}
    applies = ["cosine_similarity", "sqnr_db", "sqnr_db_tensor"]
    applies += ([MASK_METRIC] if info.mask else
                {"classification": ["top1_agreement"], "segmentation": ["top1_agreement"],
                 "detection": ["box_f1"]}.get(info.task, []))
    wanted = (lambda key: True) if only is None else (lambda key: key in only)
    applies = [key for key in applies if wanted(key)]
    samples = len(ref[0]) if ref else 0
    if samples == 0:
        for key in applies:
            not_measured[key] = "the evaluation set has no samples: give evaluation data with at least one sample"
        return metrics, not_measured
    if len(new) != len(ref) or any(len(n) != len(r) for r, n in zip(ref, new)):
        raise InputError(f"the artifact gave {len(new)} outputs x {[len(n) for n in new]} samples, the FP32 "
                         f"model {len(ref)} x {[len(r) for r in ref]}",
                         fix="run the artifact and the FP32 model on the same evaluation samples")
    broken = [any(_broken(np.asarray(r), np.asarray(n)) for r, n in zip(rk, nk)) for rk, nk in zip(ref, new)]

    def nan_note(k: int, metric: str, value: float) -> None:
        notes.append(f"{metric} = {value:g}: the artifact's output {k} has NaN/inf where the FP32 output "
                     "is finite")

    if info.mask and wanted(MASK_METRIC):
        k = info.output if info.output is not None else 0
        iou, pixels, fg, reason = mask_iou(ref[k], new[k])
        metrics.update(mask_iou=iou, mask_agreement=pixels, mask_foreground_fp32=fg)
        if reason:
            not_measured[MASK_METRIC] = reason
        elif broken[k]:
            metrics.update(mask_iou=0.0, mask_agreement=0.0)
            nan_note(k, MASK_METRIC, 0.0)
    elif info.task in ("classification", "segmentation") and not info.mask and wanted("top1_agreement"):
        k = info.output if info.output is not None else 0
        if broken[k]:
            metrics["top1_agreement"] = 0.0
            nan_note(k, "top1_agreement", 0.0)
        else:
            axis = -1 if info.per_position else None if info.task == "classification" else info.axis
            metrics["top1_agreement"] = agreement(ref[k], new[k], axis)
    if info.task == "detection" and info.layout is None and wanted("box_f1"):
        not_measured["box_f1"] = "no detection layout: declare detection: {layout: yolov8|yolov5|ssd, ...}"
    if info.task == "detection" and info.layout is not None and wanted("box_f1"):
        lay = info.layout
        f1, n_ref, n_new, reason = box_f1(lay, ref, new)
        metrics.update(box_f1=f1, box_f1_detections_fp32=n_ref, box_f1_detections_artifact=n_new)
        used = [k for k in (lay.output, lay.scores_output) if k is not None]
        if reason:
            not_measured["box_f1"] = reason
        elif any(broken[k] for k in used):
            metrics["box_f1"] = 0.0
            nan_note(next(k for k in used if broken[k]), "box_f1", 0.0)

    floats = [k for k in range(len(ref)) if np.asarray(ref[k][0]).dtype.kind in "fc"]
    ints = [k for k in range(len(ref)) if k not in floats]
    if info.task == "embedding":
        floats = [info.output if info.output is not None else (floats or [0])[0]]
    cosines = []
    for k in (floats if wanted("cosine_similarity") else []):
        if broken[k]:
            cosines.append(0.0)
            nan_note(k, "cosine_similarity", 0.0)
        else:
            cosines.append(cosine(ref[k], new[k], per_row=info.task == "embedding"))
    metrics["cosine_similarity"] = min(cosines) if cosines else None
    if not cosines and wanted("cosine_similarity"):
        not_measured["cosine_similarity"] = "the model has no float output (integer outputs are compared exactly)"
    if ints and wanted("exact_agreement"):
        metrics["exact_agreement"] = min(float(np.mean([np.array_equal(r, n) for r, n in zip(ref[k], new[k])]))
                                         for k in ints)

    worst, skipped = None, 0
    for k in (range(len(ref)) if wanted("sqnr_db") else []):
        db, channel, skip, note = channel_sqnr(ref[k], new[k])
        skipped += skip
        if note:
            notes.append(f"sqnr_db = {SQNR_FLOOR_DB:g} on output {k}: {note}")
        if db is not None and (worst is None or db < worst[0]):
            worst = (db, k, channel)
    if worst is None and wanted("sqnr_db"):
        not_measured["sqnr_db"] = (f"every channel of the FP32 outputs is constant over the {samples} "
                                   "evaluation samples: give evaluation data that varies")
    elif worst is not None:
        metrics.update(sqnr_db=worst[0], sqnr_worst_output=worst[1], sqnr_worst_channel=worst[2])
    metrics["sqnr_channels_skipped"] = skipped
    if not wanted("sqnr_db_tensor"):
        return metrics, not_measured
    tensor = [t for t in (tensor_sqnr(r, n) for r, n in zip(ref, new)) if t is not None]
    metrics["sqnr_db_tensor"] = min(tensor) if tensor else None
    if not tensor:
        not_measured["sqnr_db_tensor"] = "the FP32 outputs are all zero on the evaluation samples"
    return metrics, not_measured
