"""The distribution `edgegate-ci`: its extras declare what each target imports, with the known caps,
constraints.txt agrees with them, and every printed install command names `edgegate-ci`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}

# the distribution that provides each module a target needs
DIST_OF = {"onnx2tf": "onnx2tf", "tf_keras": "tf-keras", "onnx_graphsurgeon": "onnx-graphsurgeon",
           "sng4onnx": "sng4onnx", "ai_edge_litert": "ai-edge-litert", "coremltools": "coremltools",
           "openvino": "openvino", "nncf": "nncf", "tensorrt": "tensorrt",
           "tensorflow": ("tensorflow", "tensorflow-cpu"), "onnxruntime": "onnxruntime"}
PLATFORMS = {"linux-x86_64": {"sys_platform": "linux", "platform_machine": "x86_64"},
             "linux-aarch64": {"sys_platform": "linux", "platform_machine": "aarch64"},
             "macos-arm64": {"sys_platform": "darwin", "platform_machine": "arm64"}}


def installed(extra: str, platform: str) -> dict[str, Requirement]:
    env = PLATFORMS[platform]
    out = {}
    for req in EXTRAS[extra]:
        if req.marker is None or req.marker.evaluate({**env, "extra": extra}):
            out[req.name] = req
    return out


def test_the_distribution_is_edgegate_ci_and_all_refers_to_itself():
    assert PROJECT["name"] == "edgegate-ci"
    assert PROJECT["scripts"] == {"edgegate": "edgegate.cli.main:main"}
    nested = [r for r in EXTRAS["all"] if r.extras]
    assert [r.name for r in nested] == ["edgegate-ci"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_each_extra_declares_every_module_its_targets_import(platform):
    from edgegate._deps import undeclared_here
    from edgegate.targets import TARGETS

    for entry in TARGETS.values():
        if entry.extra is None:
            continue
        have = installed(entry.extra, platform)
        for module in entry.modules:
            if module == "onnxruntime":
                continue                    # a base dependency
            if module == "tf_keras" and platform == "linux-x86_64":
                # tf-keras requires the `tensorflow` distribution; tensorflow-cpu is installed here
                assert "tf-keras" not in have and "tensorflow" not in have
                continue
            dists = DIST_OF[module] if isinstance(DIST_OF[module], tuple) else (DIST_OF[module],)
            assert any(d in have for d in dists), f"{entry.extra} on {platform} lacks {module}"
    if platform == "linux-x86_64" and sys.platform.startswith("linux"):
        import platform as host

        assert undeclared_here("tf_keras") == (host.machine() == "x86_64")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_one_tensorflow_per_platform(platform):
    for extra in ("tensorflow", "tflite", "coreml"):
        tf = {n for n in installed(extra, platform) if n in ("tensorflow", "tensorflow-cpu")}
        assert tf == ({"tensorflow-cpu"} if platform == "linux-x86_64" else {"tensorflow"}), (extra, platform)


def test_onnx2tf_is_capped_below_the_version_that_breaks_the_set():
    for extra in ("tflite", "coreml"):
        spec = installed(extra, "linux-x86_64")["onnx2tf"].specifier
        assert "1.28.8" in spec and "1.29.0" not in spec and "1.29.3" not in spec


def test_constraints_satisfy_every_declared_requirement():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[req.name] = next(iter(req.specifier)).version
    reqs = [Requirement(r) for r in PROJECT["dependencies"]] + [r for rs in EXTRAS.values() for r in rs]
    for req in reqs:
        if req.name in pins:
            assert req.specifier.contains(pins[req.name], prereleases=True), \
                f"constraints.txt pins {req.name}=={pins[req.name]}, pyproject wants {req}"
    assert {"tensorflow", "tensorflow-cpu", "tf-keras"} <= set(pins)
    assert pins["tf-keras"] == pins["tensorflow"] == pins["tensorflow-cpu"]


def test_the_docker_requirements_follow_the_nested_extras():
    proc = subprocess.run([sys.executable, str(ROOT / "docker" / "requirements.py"),
                           str(ROOT / "pyproject.toml"), "all"], capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert not any("edgegate" in line for line in lines)
    assert any(line.startswith("onnx2tf") for line in lines) and any(line.startswith("torch") for line in lines)


def test_no_install_command_names_the_other_projects_distribution():
    pattern = re.compile(r"pip install\s+(?:-\S+\s+)*[\"']?edgegate(\[|[\"'\s]|$)")
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yml", ".toml", "")
             and not any(part in (".git", ".venv", "build", "__pycache__", ".pytest_cache")
                         for part in p.relative_to(ROOT).parts)]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in files
                 for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
                 if pattern.search(line) and p.name != "test_packaging.py"]
    assert not offenders, offenders


def test_install_hints_name_edgegate_ci():
    from edgegate._deps import install_hint

    assert install_hint("tflite", ["onnx2tf"]).startswith('pip install "edgegate-ci[tflite]"')
    assert install_hint(None) is None
    hint = install_hint("tflite", ["tf_keras"])
    from edgegate._deps import undeclared_here

    if undeclared_here("tf_keras"):
        assert hint.startswith("pip install --no-deps \"tf-keras"), hint
        assert "edgegate-ci" not in hint        # the extra does not bring it here
    else:
        assert hint == 'pip install "edgegate-ci[tflite]"'


@pytest.mark.slow       # a pip install (PyPI, through pip's cache) and a whole gate: about 2 minutes
def test_a_bare_venv_install_of_the_checkout_inits_and_gates_an_onnx_model(tmp_path):
    """The bar of a new user's first hour: `pip install` of the checkout (no extras) into a fresh
    venv, then `edgegate init` and `edgegate run` on a repository holding one ONNX model and its
    data end with a verdict, no file edited by hand."""
    import json

    from conftest import git
    from tinyrepo import tiny_onnx, write_data

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    pip = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", "-c", str(ROOT / "constraints.txt"),
                          str(ROOT)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    frameworks = subprocess.run([str(bin_dir / "python"), "-c",
                                 "import importlib.util as u; print([m for m in ('torch', "
                                 "'tensorflow') if u.find_spec(m)])"],
                                capture_output=True, text=True, timeout=60)
    assert frameworks.stdout.strip() == "[]"             # the base install, no extras pulled in

    repo = tmp_path / "mine"
    tiny_onnx(repo / "models" / "tiny.onnx")
    write_data(repo)
    git(repo, "init", "-q", "-b", "main")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    init = subprocess.run([str(bin_dir / "edgegate"), "init"], cwd=repo, capture_output=True,
                          text=True, timeout=120, env=env)
    assert init.returncode == 0, init.stdout + init.stderr
    run = subprocess.run([str(bin_dir / "edgegate"), "run", "models/tiny.onnx", "--no-cache"],
                         cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode in (0, 1), run.stdout + run.stderr          # a verdict, not an error
    assert "config: edgegate.yml" in run.stderr
    report = json.loads((repo / ".edgegate-out" / "report.json").read_text())
    (model,) = report["models"]
    (result,) = model["results"]
    assert model["error"] is None and result["status"] in ("passed", "failed")
    assert result["metrics"]["accuracy_drop_pp"] is not None         # the init'd labelled data used
    assert result["metrics"]["latency_p50_ms_after"] is not None
    assert report["verdict"] == result["status"]
