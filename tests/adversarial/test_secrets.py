"""Code from a pull request never runs where a secret is.

One real ``edgegate run`` (real torch, real ONNX Runtime) on a git repository holding a fake
``GITHUB_TOKEN`` in the environment and in ``.git/config`` (the ``http.https://github.com/
.extraheader`` actions/checkout persists). The pull request's model factory and custom metric
look for the token (environment, ``.git/config``), try to write a file outside their folder and to
open a socket to a loopback server this test runs, and raise an exception saying what they saw.
That text reaches report.json; it must hold neither the token nor a redaction marker: the child
never saw the secret, so there was nothing to redact.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import hostile
from conftest import commit_all, git

from edgegate.trust.isolation import Sandbox, run_in_child

TOKEN = "ghs_FAKEtoken0123456789abcdefEDGEGATE"
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
SNOOP = '''import json, os, socket
from pathlib import Path


def snoop():
    saw = dict(cwd=os.getcwd())
    saw["env_token"] = [k for k, v in os.environ.items() if "FAKEtoken" in v or "{basic}" in v]
    saw["env_names"] = sorted(k for k in os.environ if "TOKEN" in k or k.startswith(("GITHUB_", "ACTIONS_")))
    try:
        text = Path("{git}").read_text()
        saw["git"] = "read: token " + ("present" if "{basic}" in text else "absent")
    except OSError as exc:
        saw["git"] = type(exc).__name__
    try:
        Path("{outside}").write_text("written by the pull request")
        saw["write"] = "written"
    except OSError as exc:
        saw["write"] = type(exc).__name__
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
        saw["net"] = "connected"
    except OSError as exc:
        saw["net"] = type(exc).__name__
    return saw


def build():
    raise RuntimeError("SAW " + json.dumps(snoop()))


def score(outputs, labels):
    raise RuntimeError("SAW " + json.dumps(snoop()))
'''


class Listener:
    """A loopback TCP server that records whether anyone connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def protections() -> dict:
    """What the kernel gives a child here (the same detection the run uses)."""
    from edgegate.trust.isolation import last_protections

    run_in_child("edgegate.trust.isolation:isolation_enabled", (), timeout_s=60, memory_limit_mb=4096,
                 what="probe", sandbox=Sandbox())
    return last_protections()


def _saw(message: str) -> dict:
    assert "SAW " in message, message
    return json.loads(message[message.index("SAW ") + 4:].split("}", 1)[0] + "}")


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("secrets")
    outside = tmp / "outside" / "pwned.txt"
    outside.parent.mkdir()
    server = Listener()
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("x\n")
    hostile.tiny_data(repo / "data/eval.npz")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "http.https://github.com/.extraheader", f"AUTHORIZATION: basic {BASIC}")
    (repo / "edgegate.yml").write_text(
        "version: 1\nmodels:\n"
        "  - path: models/factory.pt\n    factory: 'snoop:build'\n"
        "    inputs: {x: {shape: [1, 4], dtype: float32}}\n    calibration: {synthetic: true}\n"
        "  - path: models/metric.onnx\n    calibration: {synthetic: true}\n"
        "    evaluation: {data: data/eval.npz, labels: labels, metric: 'snoop:score'}\n"
        "benchmark: {repeats: 5, warmup: 1, min_time_s: 0.05, max_time_s: 1}\n")
    commit_all(repo, "base")
    (repo / "models").mkdir()
    torch.save({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}, repo / "models/factory.pt")
    hostile.onnx_tiny(repo / "models/metric.onnx")
    (repo / "snoop.py").write_text(SNOOP.format(basic=BASIC, git=repo / ".git/config",
                                                outside=outside, port=server.port))
    commit_all(repo, "hostile code")
    assert BASIC in (repo / ".git/config").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env.update(GITHUB_TOKEN=TOKEN, INPUT_TOKEN=TOKEN, ACTIONS_RUNTIME_TOKEN=TOKEN,
               AWS_SECRET_ACCESS_KEY=TOKEN)
    try:
        proc = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "run", "--base", "HEAD~1",
                               "--no-cache"], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=600)
    finally:
        server.close()
    out = repo / ".edgegate-out"
    assert (out / "report.json").is_file(), proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    return proc, out, report, {m["path"]: m for m in report["models"]}, outside, server


def test_the_token_is_in_no_output(secret_run):
    proc, out, *_ = secret_run
    texts = {"stdout": proc.stdout, "stderr": proc.stderr}
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".txt"):
            texts[str(f.relative_to(out))] = f.read_text(errors="replace")
    assert {"report.json", "comment.md", "summary.md"} <= set(texts), sorted(texts)
    for name, text in texts.items():
        assert TOKEN not in text and BASIC not in text, name
        assert TOKEN[4:20] not in text, name


@pytest.mark.parametrize("path", ["models/factory.pt", "models/metric.onnx"])
def test_the_pull_requests_code_never_saw_the_token(secret_run, path):
    *_, models, _, _ = secret_run
    model = models[path]
    assert model["status"] == "error", model
    message = model["error"]["message"]
    saw = _saw(message)
    # nothing was hidden afterwards: no redaction marker, and the code's own findings say no
    assert "***" not in message, message
    assert saw["env_token"] == [] and saw["env_names"] == [], saw
    assert Path(saw["cwd"]).parent.name.startswith("edgegate-child-"), saw    # its own folder


@pytest.mark.parametrize("path", ["models/factory.pt", "models/metric.onnx"])
def test_no_write_outside_and_no_network_where_the_kernel_allows(secret_run, path):
    *_, models, outside, server = secret_run
    saw = _saw(models[path]["error"]["message"])
    applied = protections()
    if applied.get("landlock"):
        assert saw["git"] == "PermissionError", saw            # .git/config not readable
        assert saw["write"] == "PermissionError" and not outside.exists(), saw
    if applied.get("netns"):
        assert saw["net"] != "connected" and server.connections == 0, saw
    if not (applied.get("landlock") and applied.get("netns")):
        pytest.skip(f"this kernel gives the child only: {applied}")


def test_the_log_states_the_protections_once(secret_run):
    proc, *_ = secret_run
    lines = [line for line in proc.stderr.splitlines() if "code from the pull request runs in" in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "allow-listed environment" in lines[0]


def test_a_payload_holding_a_secret_is_refused(monkeypatch):
    from edgegate.errors import IsolationError

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    with pytest.raises(IsolationError, match="credential"):
        run_in_child("edgegate.trust.isolation:isolation_enabled", ({"token": TOKEN},), timeout_s=60,
                     memory_limit_mb=4096, what="probe")


def test_the_child_environment_is_an_allow_list(tmp_path):
    from edgegate.trust.isolation import child_env

    env = child_env(tmp_path, {"PATH": "/usr/bin", "LC_ALL": "C", "OMP_NUM_THREADS": "2",
                               "GITHUB_TOKEN": "x" * 20, "GITHUB_ACTIONS": "true",
                               "GITHUB_REPOSITORY": "o/r", "ACTIONS_RUNTIME_TOKEN": "x",
                               "ACTIONS_ID_TOKEN_REQUEST_URL": "u", "AWS_ACCESS_KEY_ID": "a",
                               "EDGEGATE_CACHE_DIR": "/c", "EDGEGATE_GITHUB_TOKEN": "t",
                               "MY_API_KEY": "k", "DB_PASSWORD": "p", "SSH_AUTH_SOCK": "/s",
                               "HOME": "/root", "PYTHONPATH": "/p"})
    assert env["HOME"] == str(tmp_path / "home") and env["TMPDIR"] == str(tmp_path / "tmp")
    assert {"PATH", "LC_ALL", "OMP_NUM_THREADS", "GITHUB_ACTIONS", "EDGEGATE_CACHE_DIR"} <= set(env)
    assert not {"GITHUB_TOKEN", "GITHUB_REPOSITORY", "ACTIONS_RUNTIME_TOKEN",
                "ACTIONS_ID_TOKEN_REQUEST_URL", "AWS_ACCESS_KEY_ID", "EDGEGATE_GITHUB_TOKEN",
                "MY_API_KEY", "DB_PASSWORD", "SSH_AUTH_SOCK"} & set(env)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/p"


def test_a_result_pickle_naming_a_function_is_refused(tmp_path):
    """The child ran the pull request's code: its result file must not execute anything here."""
    from edgegate.errors import IsolationError
    from edgegate.trust.isolation import _load_result

    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with pytest.raises(IsolationError, match="not plain data"):
        _load_result(pickle.dumps(("ok", Evil())), "probe")
    assert not (tmp_path / "pwned").exists()
