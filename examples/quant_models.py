"""Models that are hard to quantize, built from real training on scikit-learn's digits.

- ``inject_outliers``: a function-preserving rescale across a ReLU (unit k of one Gemm/Conv times
  ``scale``, the matching input column of the next one divided by it). The FP32 outputs are the
  same; the activation between the two layers now has huge outliers, the pattern that makes
  per-tensor INT8 activations lose everything but the outlier (as in large language models).
- ``train_attention``: a small transformer-like classifier (rows of the image as tokens, one
  self-attention block and an MLP), MatMul-heavy.
- ``train_separable``: a depthwise-separable CNN (MobileNet-style depthwise 3x3 + pointwise 1x1
  blocks), the pattern whose depthwise convolutions can run slower in INT8 than in float.

Used by tests/test_mixed_precision.py and benchmarks/compare_quantize.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import digits


def inject_outliers(src: Path, dst: Path, scale: float = 1000.0, units: tuple[int, ...] = (0, 1),
                    producer: str | None = None, consumer: str | None = None) -> tuple[str, str]:
    """Rescale ``units`` of the producer's output by ``scale`` and the consumer's matching inputs
    by 1/scale. Default: the first two Gemm nodes (the classifier head). Returns their names."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    gemms = [n for n in model.graph.node if n.op_type in ("Gemm", "Conv")]
    if producer is None:
        heads = [n for n in gemms if n.op_type == "Gemm"]
        prod, cons = heads[0], heads[1]
    else:
        prod = next(n for n in gemms if n.name == producer)
        cons = next(n for n in gemms if n.name == consumer)
    init = {i.name: i for i in model.graph.initializer}
    idx = list(units)

    def update(name: str, fn) -> None:
        arr = numpy_helper.to_array(init[name]).astype(np.float32).copy()
        init[name].CopyFrom(numpy_helper.from_array(fn(arr).astype(np.float32), name))

    def trans_b(node) -> bool:
        return any(a.name == "transB" and a.i for a in node.attribute)

    def scale_out(a):
        if prod.op_type == "Gemm" and not trans_b(prod) and a.ndim == 2:
            a[:, idx] *= scale
        else:
            a[idx] *= scale
        return a

    def scale_in(a):
        if cons.op_type == "Gemm" and not trans_b(cons):
            a[idx] /= scale
        else:
            a[:, idx] /= scale
        return a

    update(prod.input[1], scale_out)
    if len(prod.input) > 2 and prod.input[2]:
        update(prod.input[2], lambda a: (a.__setitem__(idx, a[idx] * scale), a)[1])
    update(cons.input[1], scale_in)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return prod.name, cons.name


def build_attention(dim: int = 64):
    import torch
    import torch.nn as nn

    class TinyTransformer(nn.Module):
        """32 tokens (the rows of the 32x32 digit) of 32 features; one attention block + MLP."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(digits.SIZE, dim)
            self.pos = nn.Parameter(torch.zeros(1, digits.SIZE, dim))
            self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.proj = nn.Linear(dim, dim)
            self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.ReLU(), nn.Linear(dim * 2, dim))
            self.head = nn.Linear(dim, 10)
            self.scale = dim ** -0.5

        def forward(self, x):
            t = self.embed(x.reshape(x.shape[0], digits.SIZE, digits.SIZE)) + self.pos
            h = self.norm1(t)
            att = torch.softmax(torch.matmul(self.q(h), self.k(h).transpose(1, 2)) * self.scale, dim=-1)
            t = t + self.proj(torch.matmul(att, self.v(h)))
            t = t + self.mlp(self.norm2(t))
            return self.head(t.mean(dim=1))

    return TinyTransformer()


def build_separable(width: int = 16):
    import torch.nn as nn

    def block(c_in: int, c_out: int) -> list:
        return [nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in), nn.BatchNorm2d(c_in), nn.ReLU(),
                nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(          # a strided stem, as MobileNets have: 32x32 -> 16x16
        nn.Conv2d(1, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        *block(width, width * 2), nn.MaxPool2d(2),
        *block(width * 2, width * 4), nn.MaxPool2d(2),
        *block(width * 4, width * 4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 4, 10),
    )


def _fit(build, seed: int, epochs: int, lr: float = 2e-3):
    """Train ``build()`` on digits with Adam; returns (model in eval mode, test accuracy in %)."""
    import torch

    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = digits.digits_data()
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return model, float((pred == y_test).mean() * 100)


def train_attention(seed: int = 0, epochs: int = 8):
    """Train the tiny transformer on digits; returns (model in eval mode, test accuracy in %)."""
    return _fit(build_attention, seed, epochs)


def train_separable(seed: int = 0, epochs: int = 3, width: int = 16):
    """Train the depthwise-separable CNN on digits; returns (model in eval mode, test accuracy in %)."""
    return _fit(lambda: build_separable(width), seed, epochs, lr=1e-2)


def benchmark_models(folder: Path, quick: bool, outlier: bool = True) -> dict[str, Path]:
    """The benchmark set, trained here: the digits CNN, (optionally) its outlier twin, and the
    small attention classifier, exported to ONNX in ``folder``."""
    import torch

    torch.set_num_threads(2)
    cnn, _ = digits.train_cnn(seed=0, epochs=2 if quick else 6, width=16 if quick else 32)
    out = {"digits-cnn": digits.export_onnx(cnn, folder / "digits-cnn.onnx")}
    if outlier:
        out["digits-outlier"] = folder / "digits-outlier.onnx"
        inject_outliers(out["digits-cnn"], out["digits-outlier"])
    att, _ = train_attention(seed=0, epochs=3 if quick else 8)
    out["digits-attention"] = digits.export_onnx(att, folder / "digits-attention.onnx")
    return out
