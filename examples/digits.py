"""A small CNN trained on scikit-learn's digits (real labelled data), exported to ONNX.

Used by `make demo` (examples/build_demo.py) and by the tests. Deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32  # digits are 8x8; upsampled so that the network does real work per sample


def digits_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test): NCHW float32 in [0, 1], 32x32, labels int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    x = np.kron(x, np.ones((SIZE // 8, SIZE // 8), dtype=np.float32))[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(len(x) * 0.7)
    return x[:split], y[:split], x[split:], y[split:]


def build_cnn(width: int = 32):
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width * 2, 3, padding=1), nn.BatchNorm2d(width * 2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width * 2, width * 4, 3, padding=1), nn.BatchNorm2d(width * 4), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width * 4, width * 4, 3, padding=1), nn.BatchNorm2d(width * 4), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(width * 4 * 4, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


def train_cnn(seed: int = 0, epochs: int = 6, width: int = 32):
    """Train the CNN; returns (model in eval mode, test accuracy in %)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    x_train, y_train, x_test, y_test = digits_data()
    model = build_cnn(width)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return model, float((pred == y_test).mean() * 100)


def export_onnx(model, path: Path, opset: int = 17) -> Path:
    """Export with a dynamic batch axis, weights inside the one .onnx file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, SIZE, SIZE)
    torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=opset, dynamo=False)
    return path


def write_data(folder: Path, calibration: int = 300) -> tuple[Path, Path]:
    """calibration.npz (train split) and evaluation.npz (held-out test split, with labels)."""
    x_train, _, x_test, y_test = digits_data()
    folder.mkdir(parents=True, exist_ok=True)
    cal = folder / "calibration.npz"
    ev = folder / "evaluation.npz"
    np.savez_compressed(cal, input=x_train[:calibration])
    np.savez_compressed(ev, input=x_test, labels=y_test)
    return cal, ev
