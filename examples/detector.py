"""A tiny YOLO-style detector trained on scikit-learn's digits (real labelled data), exported to ONNX.

Canvases of 64x64 hold 1-3 digits (8x8 images upscaled x2 to 16x16) pasted at random places
that do not overlap. The network is anchor-free on a 16x16 grid (stride 4): one shared output
``[N, 4 + 10, 256]`` like YOLOv8's, boxes in pixels (center x, center y, w, h) then the ten
sigmoid class scores. Used by the tests and reusable by benchmarks. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CANVAS = 64
DIGIT = 16
STRIDE = 4
GRID = CANVAS // STRIDE
CLASSES = 10


def digit_images(split: str):
    """(images (n, 16, 16) float32 in [0, 1], labels): the first 70 % of a fixed shuffle of
    the digits for 'train', the rest for 'test'."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.kron(digits.images.astype(np.float32) / 16.0, np.ones((2, 2), dtype=np.float32))
    order = np.random.default_rng(0).permutation(len(x))
    cut = int(len(x) * 0.7)
    pick = order[:cut] if split == "train" else order[cut:]
    return x[pick], digits.target[pick].astype(np.int64)


def canvases(n: int, seed: int, split: str = "test"):
    """(x (n, 1, 64, 64) float32, boxes): boxes[i] is a (k, 5) array of class, cx, cy, w, h in pixels."""
    images, labels = digit_images(split)
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, CANVAS, CANVAS), dtype=np.float32)
    boxes = []
    for i in range(n):
        placed: list[tuple[int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            for _attempt in range(20):
                top, left = (int(v) for v in rng.integers(0, CANVAS - DIGIT + 1, 2))
                if all(abs(top - t) >= DIGIT or abs(left - l) >= DIGIT for t, l in placed):
                    placed.append((top, left))
                    break
        rows = []
        for top, left in placed:
            j = int(rng.integers(len(images)))
            x[i, 0, top:top + DIGIT, left:left + DIGIT] = images[j]
            rows.append((labels[j], left + DIGIT / 2, top + DIGIT / 2, DIGIT, DIGIT))
        boxes.append(np.asarray(rows, dtype=np.float32))
    return x, boxes


def build_detector(width: int = 16):
    import torch
    import torch.nn as nn

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            def block(cin, cout, stride):
                return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            self.body = nn.Sequential(*block(1, width // 2, 2), *block(width // 2, width, 2),
                                      *block(width, width * 2, 1), *block(width * 2, width * 2, 1))
            self.head = nn.Conv2d(width * 2, 4 + CLASSES, 1)
            gy, gx = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
            self.register_buffer("grid", torch.stack([gx, gy]).reshape(1, 2, -1).float())

        def raw(self, x):
            return self.head(self.body(x)).flatten(2)                     # (N, 14, A)

        def forward(self, x):
            out = self.raw(x)
            centre = (self.grid + 0.5 + 2 * torch.tanh(out[:, :2])) * STRIDE
            size = 2 * DIGIT * torch.sigmoid(out[:, 2:4])
            return torch.cat([centre, size, torch.sigmoid(out[:, 4:])], 1)

    return Detector()


def targets(boxes: list[np.ndarray]):
    """Per anchor: class target (N, 10, A), box target (N, 4, A) and positive mask (N, A): the
    cells whose centres lie within 4 px of a digit's centre are its positive anchors."""
    n = len(boxes)
    cls = np.zeros((n, CLASSES, GRID * GRID), dtype=np.float32)
    box = np.zeros((n, 4, GRID * GRID), dtype=np.float32)
    pos = np.zeros((n, GRID * GRID), dtype=bool)
    for i, rows in enumerate(boxes):
        for c, cx, cy, w, h in rows:
            centres = (np.arange(GRID) + 0.5) * STRIDE
            near_x = np.flatnonzero(np.abs(centres - cx) < STRIDE)
            near_y = np.flatnonzero(np.abs(centres - cy) < STRIDE)
            for a in (near_y[:, None] * GRID + near_x[None, :]).ravel():
                cls[i, int(c), a] = 1.0
                box[i, :, a] = (cx, cy, w, h)
                pos[i, a] = True
    return cls, box, pos


def train_detector(seed: int = 0, canvases_n: int = 640, epochs: int = 5, width: int = 16):
    """Train on canvases of the train digits; returns the model in eval mode. Class scores
    start at a prior of 0.018 (bias -4) and positives weigh 4x, so the many background
    anchors do not drown them. One thread: these small convolutions train ~10x slower on two
    threads of a shared machine than on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(seed, canvases_n, epochs, width)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, canvases_n: int, epochs: int, width: int):
    import torch

    torch.manual_seed(seed)
    x, boxes = canvases(canvases_n, seed=seed, split="train")
    cls, box, pos = (torch.from_numpy(a) for a in targets(boxes))
    xt = torch.from_numpy(x)
    model = build_detector(width)
    with torch.no_grad():
        model.head.bias[4:] = -4.0
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            out = model(xt[idx])
            p = pos[idx]
            positives = max(1, int(p.sum()))
            bce = torch.nn.functional.binary_cross_entropy(out[:, 4:].clamp(1e-6, 1 - 1e-6), cls[idx],
                                                           reduction="none").sum(1)
            loss_cls = (bce * (1 + 3 * p)).sum() / positives
            loss_box = ((out[:, :4] - box[idx]).abs().sum(1) / DIGIT * p).sum() / positives
            opt.zero_grad()
            (loss_cls + loss_box).backward()
            opt.step()
    return model.eval()


def export_onnx(model, path: Path, opset: int = 17) -> Path:
    """One .onnx file, dynamic batch axis, input 'images', output 'output0' (as Ultralytics names them)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, CANVAS, CANVAS),), str(path), input_names=["images"],
                      output_names=["output0"], dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
                      opset_version=opset, dynamo=False)
    return path


def benchmark_case(folder: Path, quick: bool) -> dict:
    """benchmarks/real_models.py's ``yolo-detector`` row: the detector trained here (the tests'
    recipe; fewer canvases and epochs when quick), exported to ONNX, with calibration canvases
    of the train digits and evaluation canvases of the held-out ones (samples as the other
    cases: 64 / 128 quick, 200 / 300 full). Unlabelled: the gate reads it as a detector and
    checks box F1 against the FP32 model. Returns the keys of real_models.Case except
    name/source."""
    n_cal, n_eval = (64, 128) if quick else (200, 300)
    canvases_n, epochs = (320, 3) if quick else (640, 5)
    path = export_onnx(train_detector(seed=0, canvases_n=canvases_n, epochs=epochs), folder / "yolo-detector.onnx")
    calibration, _ = canvases(n_cal, seed=11, split="train")
    evaluation, truth = canvases(n_eval, seed=7, split="test")
    objects = sum(len(t) for t in truth)
    return {"task": "other", "onnx": path, "calibration": {"images": calibration},
            "evaluation": {"images": evaluation}, "labels": None,
            "data": (f"scikit-learn digits pasted 1-3 per 64x64 canvas (train digits for "
                     f"calibration; {n_eval} held-out canvases, {objects} digits, to evaluate); "
                     f"trained here {epochs} epochs on {canvases_n} canvases; unlabelled: box F1 "
                     "against the FP32 model")}
