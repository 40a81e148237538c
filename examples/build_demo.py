"""Build the demo model repository: a CNN trained on scikit-learn's digits, committed twice.

    python examples/build_demo.py --out build/demo

Creates a git repository at --out from examples/demo-repo/, commits a first model (v1), then a
retrained one (v2), so that `edgegate run` in it gates the change HEAD~1..HEAD.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import digits  # noqa: E402


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=EdgeGate Demo", "-c", "user.email=demo@example.invalid",
                    "-c", "commit.gpgsign=false", *args], cwd=repo, check=True,
                   stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/demo", type=Path)
    args = parser.parse_args()
    repo: Path = args.out
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(HERE / "demo-repo", repo)
    git(repo, "init", "-q", "-b", "main")

    print("demo: writing calibration and evaluation data (scikit-learn digits)", flush=True)
    digits.write_data(repo / "data")
    print("demo: training v1 of the classifier", flush=True)
    model, acc = digits.train_cnn(seed=0, epochs=3)
    digits.export_onnx(model, repo / "models" / "digits.onnx")
    print(f"demo: v1 test accuracy {acc:.2f} % (PyTorch)", flush=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Add the digits classifier (v1)")

    print("demo: training v2 (more epochs) and committing it as a change", flush=True)
    model, acc = digits.train_cnn(seed=1, epochs=6)
    digits.export_onnx(model, repo / "models" / "digits.onnx")
    print(f"demo: v2 test accuracy {acc:.2f} % (PyTorch)", flush=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Retrain the digits classifier (v2)")
    print(f"demo: repository ready at {repo}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
