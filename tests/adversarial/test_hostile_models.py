"""One pull request full of hostile and broken models beside one good model, gated by one real
`edgegate run`. Every bad model must end as its own error row (kind, file, fix), the good model
must still be gated, the report must be written, nothing may be created outside the repository
(the pickle payload's marker never appears), and the process must never be killed by the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import hostile
from conftest import commit_all, git

HAS_TORCH = all(__import__("importlib").util.find_spec(m) for m in ("torch", "onnxscript"))
HAS_TF = all(__import__("importlib").util.find_spec(m) for m in ("tensorflow", "tf2onnx"))

DATA = """    calibration: data/calibration.npz
    evaluation: {data: data/evaluation.npz, labels: labels, metric: top1}
"""
TORCH_INPUTS = "    inputs: {input: {shape: [batch, 1, 32, 32], dtype: float32}}\n"

POLICY = """version: 1
devices:
  tight-cpu:                 # the resource limits under test: 1 GiB, 20 s
    target: onnxruntime
    memory_limit_mb: 1024
    timeout_s: 20
"""

# path -> (error kinds accepted, words the message must contain)
EXPECTED: dict[str, tuple[set[str], tuple[str, ...]]] = {}


def expect(path: str, kinds: set[str] | str, *words: str) -> str:
    EXPECTED[path] = ({kinds} if isinstance(kinds, str) else kinds, words)
    return path


def build_repo(root: Path, good: Path, outside: Path) -> tuple[Path, dict[str, Path]]:
    """main holds the configuration and data; the next commit (the pull request) adds the models."""
    repo = root / "repo"
    (repo / "data").mkdir(parents=True)
    shutil.copytree(good / "data", repo / "data", dirs_exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.bin").write_bytes(np.arange(16, dtype=np.float32).tobytes())
    shutil.copy(good / "data/calibration.npz", outside / "calibration.npz")
    markers = {"raw": outside / "pwned-raw", "zip": outside / "pwned-zip"}

    cfg = ["version: 1", "policy: policy.yml", "devices: [x86-cpu]", "models:"]

    def model(path: str, extra: str = "", data: str = DATA) -> None:
        cfg.append(f"  - path: {path}\n{data}{extra}".rstrip("\n"))

    # ---- bad data beside a good model (copies of the good model, each with its own data)
    x = np.load(good / "data/evaluation.npz")
    bad = repo / "data/bad"
    bad.mkdir()
    np.savez(bad / "wrong_shape.npz", input=x["input"][:, :, :16, :16], labels=x["labels"])
    np.savez(bad / "wrong_dtype.npz", input=x["input"].astype("U8"), labels=x["labels"])
    np.savez(bad / "wrong_count.npz", input=x["input"], labels=x["labels"][:10])
    np.savez(bad / "wrong_name.npz", pixels=x["input"], labels=x["labels"])
    np.save(bad / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    hostile.zip_bomb(bad / "bomb.npz", {"labels.npy": hostile.npy_bytes(x["labels"])},
                     "input.npy", gib=1.0)
    hostile.random_bytes(bad / "random.npz")
    os.symlink(outside / "calibration.npz", repo / "data/link.npz")
    datacases = {
        "wrong_shape": ("data/bad/wrong_shape.npz", {"input"}, ("shape",)),
        "wrong_dtype": ("data/bad/wrong_dtype.npz", {"input"}, ("<U8", "float32")),
        "wrong_count": ("data/bad/wrong_count.npz", {"input"}, ("sample counts",)),
        "wrong_name": ("data/bad/wrong_name.npz", {"input"}, ("no array named",)),
        "objects": ("data/bad/objects.npy", {"input"}, ("Python objects",)),
        "bomb": ("data/bad/bomb.npz", {"unsafe-input"}, ("zip bomb",)),
        "random": ("data/bad/random.npz", {"input"}, ("cannot read",)),
        "dotdot": ("../outside/calibration.npz", {"unsafe-input"}, ("outside the repository",)),
        "absolute": (str(outside / "calibration.npz"), {"unsafe-input"}, ("outside the repository",)),
        "symlink": ("data/link.npz", {"unsafe-input"}, ("outside the repository",)),
    }
    for name, (data_path, kinds, words) in datacases.items():
        path = expect(f"datacases/{name}.onnx", kinds, *words)
        model(path, data=f"    calibration: {data_path}\n"
                         f"    evaluation: {{data: {data_path}, labels: labels, metric: top1}}\n")

    # ---- ONNX
    model("models/*.onnx")
    m = repo / "models"
    m.mkdir(exist_ok=True)
    shutil.copy(good / "digits.onnx", m / "good.onnx")
    hostile.random_bytes(m / "random.onnx")
    hostile.truncated(good / "digits.onnx", m / "truncated.onnx")
    hostile.onnx_cycle(m / "cycle.onnx")
    hostile.onnx_missing_initializer(m / "missing_init.onnx")
    hostile.onnx_absurd_dims(m / "absurd_dims.onnx")
    hostile.onnx_external(m / "ext_dotdot.onnx", "../../outside/secret.bin")
    hostile.onnx_external(m / "ext_absolute.onnx", str(outside / "secret.bin"))
    os.symlink(outside / "secret.bin", m / "ext_link.bin")
    hostile.onnx_external(m / "ext_symlink.onnx", "ext_link.bin")
    _, nan_init = hostile.onnx_nonfinite(good / "digits.onnx", m / "nan_weights.onnx", float("nan"))
    _, inf_init = hostile.onnx_nonfinite(good / "digits.onnx", m / "inf_weights.onnx", float("inf"))
    os.symlink(outside / "secret.bin", m / "link_out.onnx")
    expect("models/random.onnx", "input", "not a readable ONNX model")
    expect("models/truncated.onnx", "input", "ONNX")
    expect("models/cycle.onnx", "input", "cycle", "first", "second")
    expect("models/missing_init.onnx", "input", "'W'", "missing initializer")
    expect("models/absurd_dims.onnx", "input", "W", "4000000000000 bytes")
    for name in ("ext_dotdot", "ext_absolute", "ext_symlink"):
        expect(f"models/{name}.onnx", "unsafe-input", "outside the repository")
    expect("models/nan_weights.onnx", "input", nan_init, "NaN")
    expect("models/inf_weights.onnx", "input", inf_init, "Inf")
    expect("models/link_out.onnx", "unsafe-input", "outside the repository")
    # resources: a model that hangs and one that asks for 8 GiB, each on a 20 s / 1 GiB device
    model("limits/*.onnx", "    devices: [tight-cpu]\n",
          data="    calibration: {synthetic: true, samples: 4}\n")
    hostile.onnx_hang(repo / "limits/hang.onnx")
    hostile.onnx_memory_hog(repo / "limits/hog.onnx", gib=8)
    expect("limits/hang.onnx", {"isolation", "input"}, "timeout of 20 s")
    expect("limits/hog.onnx", {"isolation", "input"}, "memory")

    # ---- PyTorch (random bytes and bombs are refused before torch is even imported)
    model("models/*.pt", TORCH_INPUTS)
    model("models/*.pth", TORCH_INPUTS)
    model("models/*.pt2", TORCH_INPUTS)
    for suffix in ("pt", "pth", "pt2"):
        hostile.random_bytes(m / f"random.{suffix}", seed=1)
        expect(f"models/random.{suffix}", {"input", "dependency"}, "PyTorch")
    hostile.zip_bomb(m / "bomb.pt", {"archive/version": b"3\n"}, "archive/data.pkl")
    expect("models/bomb.pt", {"unsafe-input", "dependency"}, "zip bomb")
    hostile.raw_pickle(m / "pickle_raw.pth", markers["raw"])
    expect("models/pickle_raw.pth", {"unsafe-input", "dependency"}, "unpickling")
    if HAS_TORCH:
        hostile.torch_pickle(m / "pickle_zip.pt", markers["zip"])
        hostile.truncated(m / "pickle_zip.pt", m / "truncated.pt", 0.6)
        expect("models/pickle_zip.pt", "unsafe-input", "unpickling")
        expect("models/truncated.pt", "input", "truncated")

    # ---- TensorFlow / Keras
    model("models/*.keras")
    model("models/*.h5")
    for suffix in ("keras", "h5"):
        hostile.random_bytes(m / f"random.{suffix}", seed=2)
        expect(f"models/random.{suffix}", {"input", "dependency"}, "")   # Keras' own words
    hostile.zip_bomb(m / "bomb.keras", {"metadata.json": b"{}", "config.json": b"{}"},
                     "model.weights.h5")
    expect("models/bomb.keras", {"unsafe-input", "dependency"}, "zip bomb")
    model("models/random_savedmodel")
    (m / "random_savedmodel/variables").mkdir(parents=True)
    hostile.random_bytes(m / "random_savedmodel/saved_model.pb", seed=3)
    expect("models/random_savedmodel", {"input", "dependency"}, "saved_model.pb")
    if HAS_TF:
        hostile.keras_lambda(m / "lambda.keras")
        hostile.truncated(m / "lambda.keras", m / "truncated.keras", 0.5)
        expect("models/lambda.keras", "unsafe-input", "Lambda")
        expect("models/truncated.keras", "input", ".keras", "truncated")
        model("models/custom_op_savedmodel")
        hostile.savedmodel_custom_op(m / "custom_op_savedmodel")
        expect("models/custom_op_savedmodel", "input", "EdgeGateNoSuchOp")

    (repo / "edgegate.yml").write_text("\n".join(cfg) + "\nbenchmark: {repeats: 10, min_time_s: 0.1, "
                                       "max_time_s: 2}\nquantization: {search_samples: 100, "
                                       "search_time_s: 20}\n")
    (repo / "policy.yml").write_text(POLICY)
    datacase_dir = repo / "datacases"
    datacase_dir.mkdir()
    for name in datacases:
        shutil.copy(good / "digits.onnx", datacase_dir / f"{name}.onnx")
    # main: configuration and data only; the pull request adds every model
    moved = root / "held"
    for folder in ("models", "limits", "datacases"):
        shutil.move(str(repo / folder), str(moved / folder))
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "configuration and data")
    for folder in ("models", "limits", "datacases"):
        shutil.move(str(moved / folder), str(repo / folder))
    commit_all(repo, "a pull request full of hostile models")
    return repo, markers


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, digits_onnx_cached):
    root = tmp_path_factory.mktemp("hostile")
    repo, markers = build_repo(root, digits_onnx_cached, root / "outside")
    before = hostile.snapshot(root, skip=repo)
    proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "--base", "HEAD~1",
                           "--no-cache"], cwd=repo, capture_output=True, text=True, timeout=900)
    after = hostile.snapshot(root, skip=repo)
    report_path = repo / ".edgegate-out/report.json"
    assert report_path.is_file(), proc.stderr[-4000:]
    report = json.loads(report_path.read_text())
    return dict(proc=proc, report=report, models={m["path"]: m for m in report["models"]},
                repo=repo, markers=markers, created_outside=after - before)


def _error_of(model: dict) -> dict | None:
    if model["error"]:
        return model["error"]
    errors = [r["error"] for r in model["results"] if r["error"]]
    return errors[0] if errors else None


@pytest.mark.slow
def test_the_run_survives_and_writes_the_report(hostile_run):
    proc = hostile_run["proc"]
    assert proc.returncode == 2, proc.stderr[-3000:]        # bad input, not an internal error
    assert proc.returncode > 0 and proc.returncode != -9, "killed by the kernel"
    repo = hostile_run["repo"]
    for name in ("report.json", "comment.md", "summary.md"):
        assert (repo / ".edgegate-out" / name).is_file()
    assert hostile_run["report"]["verdict"] == "error"


@pytest.mark.slow
def test_the_good_model_is_still_gated(hostile_run):
    good = hostile_run["models"]["models/good.onnx"]
    assert good["status"] in ("passed", "failed"), good
    (row,) = good["results"]
    assert row["status"] in ("passed", "failed"), row
    assert row["metrics"]["accuracy_after"] is not None


@pytest.mark.slow
def test_every_bad_model_is_its_own_clear_error_row(hostile_run):
    models = hostile_run["models"]
    missing = sorted(set(EXPECTED) - set(models))
    assert not missing, f"not in the report: {missing}"
    problems = []
    for path, (kinds, words) in sorted(EXPECTED.items()):
        model = models[path]
        error = _error_of(model)
        if model["status"] != "error" or error is None:
            problems.append(f"{path}: status {model['status']}, no error")
            continue
        text = error["message"]
        if error["kind"] not in kinds or not all(w in text for w in words) or not error["fix"]:
            problems.append(f"{path}: {error['kind']}: {text} (fix: {error['fix']})")
        elif error["kind"] != "dependency" and not error["file"]:
            problems.append(f"{path}: the error names no file: {text}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_no_payload_ran_and_nothing_was_written_outside(hostile_run):
    for name, marker in hostile_run["markers"].items():
        assert not marker.exists(), f"the {name} pickle payload ran"
    assert hostile_run["created_outside"] == set()


@pytest.mark.slow
def test_the_work_directory_is_removed_and_disk_use_reported(hostile_run):
    repo = hostile_run["repo"]
    assert not (repo / ".edgegate-out/.work").exists()
    disk = hostile_run["report"]["disk"]
    artifacts = sum(p.stat().st_size for p in (repo / ".edgegate-out/artifacts").rglob("*") if p.is_file())
    assert disk["artifact_bytes_total"] == artifacts > 0
    assert disk["work_bytes_peak"] > 0


def test_zip_bomb_builder_really_inflates(tmp_path):
    """Control: the bombs above are real (1 GiB declared and inflatable from a few MB)."""
    bomb = hostile.zip_bomb(tmp_path / "b.zip", {}, "x", gib=0.25)
    assert bomb.stat().st_size < 2 << 20
    with zipfile.ZipFile(bomb) as zf:
        assert zf.getinfo("x").file_size == 256 << 20
        with zf.open("x") as fh:
            assert len(fh.read(64 << 20)) == 64 << 20
