"""Text from a pull request cannot command the Actions runner or disguise itself in the comment,
and code the configuration names cannot come from outside the repository or end the run.

Real runs of ``python -m edgegate.cli.main run`` on git repositories built here, with real ONNX
(and PyTorch) models; the log is read the way the Actions runner reads it
(``hostile.workflow_commands``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hostile
from conftest import commit_all, git

from edgegate.github.actions_env import Annotation
from edgegate.trust.logsafe import CommandPause, escape_data, log_text
from edgegate.report.render import md

FORGED = "::error file=README.md,line=1::forged"
HOSTILE_NAMES = [                                  # file names under models/, each a real model
    f"{FORGED}.onnx",
    "::stop-commands::pwned.onnx",
    "::warning title=x::forged warning.onnx",
    "  ::add-mask::indented.onnx",
    "##[error]old-style.onnx",
    "cr\r::set-output name=verdict::passed.onnx",
]
BROKEN_NAMES = [f"{FORGED} broken.onnx", "nl\n::error::newline broken.onnx"]   # error paths too
BIDI_DIR = "www.evil.example"
BIDI_FILE = "report\u202egnp.onnx"              # shows as "reportpng.onnx"-like, reversed
LINKY_REF = "https://evil.example/x and www.evil.example \u200b\u2066here"   # a refused metric: quoted
BENCH = "benchmark: {repeats: 5, warmup: 1, min_time_s: 0.05, max_time_s: 1}\n"


def edgegate(*args, cwd: Path, env: dict | None = None, timeout: float = 600):
    full = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgegate.cli.main", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def _repo(tmp_path: Path, config: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("x\n")
    (repo / "edgegate.yml").write_text(config)
    hostile.tiny_data(repo / "data/eval.npz")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "base")
    return repo


# ------------------------------------------------------------------ the Actions log


@pytest.fixture(scope="module", params=["actions", "plain"])
def named_run(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"names-{request.param}")
    config = ("version: 1\nmodels:\n"
              f"  - path: models/linky/*.onnx\n    calibration: {{synthetic: true}}\n"
              f"    evaluation: {{data: data/eval.npz, labels: labels, metric: {json.dumps(LINKY_REF)}}}\n"
              "  - path: models/*.onnx\n    calibration: {synthetic: true}\n"
              "    evaluation: {data: data/eval.npz, labels: labels, metric: top1}\n" + BENCH)
    repo = _repo(tmp, config)
    for i, name in enumerate(HOSTILE_NAMES):
        hostile.onnx_tiny(repo / "models" / name, seed=i)
    for name in BROKEN_NAMES:
        hostile.random_bytes(repo / "models" / name, size=64)
    hostile.onnx_tiny(repo / "models" / BIDI_DIR / BIDI_FILE)
    hostile.onnx_tiny(repo / "models/linky/linky.onnx")
    commit_all(repo, "hostile names")
    env = {"GITHUB_ACTIONS": "true"} if request.param == "actions" else {}
    proc = edgegate("run", "--base", "HEAD~1", "--no-cache", cwd=repo, env=env)
    return request.param, repo, proc


def test_the_hostile_names_are_gated_and_reported(named_run):
    _, repo, proc = named_run
    assert proc.returncode == 2, proc.stderr[-3000:]            # the broken ones are input errors
    report = json.loads((repo / ".edgegate-out/report.json").read_text())
    paths = {m["path"]: m for m in report["models"]}
    for name in HOSTILE_NAMES:
        assert paths[f"models/{name}"]["status"] in ("passed", "failed"), paths[f"models/{name}"]
    for name in BROKEN_NAMES:
        assert paths[f"models/{name}"]["status"] == "error"
    assert paths[f"models/{BIDI_DIR}/{BIDI_FILE}"]["status"] in ("passed", "failed")
    assert "evil.example/x" in paths["models/linky/linky.onnx"]["error"]["message"]


def test_no_line_of_the_log_runs_a_workflow_command_from_a_name(named_run):
    mode, _, proc = named_run
    log = proc.stdout + "\n" + proc.stderr
    assert "forged" in log                       # the names are printed, just not as commands
    commands = hostile.workflow_commands(proc.stdout) + hostile.workflow_commands(proc.stderr)
    for name, line in commands:
        # EdgeGate's own: groups, its warnings, and pauses with a random 32-hex token
        assert name in ("group", "endgroup", "warning", "stop-commands"), line
        if name == "warning":
            assert line.startswith("::warning::"), line        # no properties smuggled in
        if name == "stop-commands":
            assert re.fullmatch(r"::stop-commands::[0-9a-f]{32}", line), line
    for line in re.split(r"\r\n|\r|\n", log):     # '##[' inside an own command's data is inert
        assert not line.lstrip().startswith(FORGED[:8]), line
    if mode == "actions":
        assert any(n == "group" for n, _ in commands) and any(n == "stop-commands" for n, _ in commands)
    else:
        assert commands == []


def test_bidi_and_zero_width_characters_are_visible_escapes_in_the_comment(named_run):
    _, repo, _ = named_run
    for file in ("comment.md", "summary.md"):
        text = (repo / ".edgegate-out" / file).read_text(encoding="utf-8")
        assert "\u202e" not in text and "\u2066" not in text, file
        assert "report<U+202E>gnp.onnx" in text, file
        assert "<U+200B><U+2066>here" in text, file


def test_urls_and_www_hosts_from_the_pull_request_are_not_autolinked(named_run):
    _, repo, _ = named_run
    text = (repo / ".edgegate-out/comment.md").read_text(encoding="utf-8")
    assert "https://evil" not in text and "www.evil" not in text.lower()
    assert "https\\://evil.example/x" in text and "www\\.evil.example" in text
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="GitHub's renderer (cmarkgfm) not installed")
    html = cmarkgfm.github_flavored_markdown_to_html(text)
    assert "evil.example" in html and "href=\"https://evil" not in html
    assert "href=\"http://www.evil" not in html and "&lt;U+202E&gt;" in html
    assert "https://evil.example/x" in html       # readable: the rendered text is the real text


# ------------------------------------------------------------------ the helpers, directly


@pytest.mark.parametrize("text", [FORGED, "  ::add-mask::x", "\t::stop-commands::t",
                                  "a\n::error::b", "a\r::error::b", "x ##[error]y", "\x1b[31m"])
def test_log_text_leaves_no_command(text):
    out = log_text(text)
    assert hostile.workflow_commands(out) == []
    assert "\r" not in out and "\x1b" not in out


def test_annotation_data_and_properties_are_escaped_like_the_toolkit():
    a = Annotation("error", "50% done\r\n::error::x", file="a,b:c.onnx", title="t\n::warning::")
    assert a.command() == ("::error file=a%2Cb%3Ac.onnx,title=t%0A%3A%3Awarning%3A%3A::"
                           "50%25 done%0D%0A::error::x")
    assert Annotation("set-output name=x", "v").command().startswith("::warning::")
    assert escape_data("%\r\n") == "%25%0D%0A"
    assert hostile.workflow_commands(a.command()) == [("error", a.command())]


def test_a_command_pause_uses_a_fresh_random_token_and_resumes():
    import io

    out = io.StringIO()
    pause = CommandPause(out, {"GITHUB_ACTIONS": "true"})
    with pause:
        print(FORGED, file=out)
        pause.emit("::warning::ours")
        print("::stop-commands::guess", file=out)
    assert "error" not in [n for n, _ in hostile.workflow_commands(out.getvalue())]
    tokens = re.findall(r"::stop-commands::([0-9a-f]{32})", out.getvalue())
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert out.getvalue().rstrip().endswith(f"::{tokens[1]}::")
    assert ("warning", "::warning::ours") in hostile.workflow_commands(out.getvalue())
    quiet = io.StringIO()
    with CommandPause(quiet, {}):
        pass
    assert quiet.getvalue() == ""


def test_md_escapes_render_as_the_original_text():
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="GitHub's renderer (cmarkgfm) not installed")
    for raw in ("https://a.example/b", "WWW.a.example", "mailto:x", "a_b*c*", "ftp://x.example"):
        html = cmarkgfm.github_flavored_markdown_to_html(md(raw))
        assert "<a " not in html and raw in html


# ------------------------------------------------------------------ module:function references


REFUSED = {"metric-this": "this:s", "metric-json": "json:loads", "metric-os": "os:system",
           "metric-installed": "numpy:mean", "metric-missing": "nowhere:f"}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    torch = pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("refs")
    lines = ["version: 1", "models:"]
    for name, ref in REFUSED.items():
        lines += [f"  - path: models/{name}.onnx", "    calibration: {synthetic: true}",
                  f"    evaluation: {{data: data/eval.npz, labels: labels, metric: '{ref}'}}"]
    inputs = "{x: {shape: [1, 4], dtype: float32}}"
    lines += ["  - path: models/exit-factory.pt", "    factory: 'sys:exit'", f"    inputs: {inputs}",
              "    calibration: {synthetic: true}",
              "  - path: models/repo-exit-factory.pt", "    factory: 'evil_factory:build'",
              f"    inputs: {inputs}", "    calibration: {synthetic: true}",
              "  - path: models/import-exit.pt", "    factory: 'exits_on_import:build'",
              f"    inputs: {inputs}", "    calibration: {synthetic: true}",
              "  - path: models/metric-exit.onnx", "    calibration: {synthetic: true}",
              "    evaluation: {data: data/eval.npz, labels: labels, metric: 'evil_metric:score'}",
              "  - path: models/child-metric-exit.onnx", "    calibration: {synthetic: true}",
              "    evaluation: {data: data/eval.npz, labels: labels, metric: 'child_exit:score'}",
              "  - path: models/good.onnx", "    calibration: {synthetic: true}",
              "    evaluation: {data: data/eval.npz, labels: labels, metric: 'good_metric:score'}"]
    repo = _repo(tmp, "\n".join(lines) + "\n" + BENCH)
    for name in [*REFUSED, "metric-exit", "child-metric-exit", "good"]:
        hostile.onnx_tiny(repo / f"models/{name}.onnx")
    weights = {"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}
    for name in ("exit-factory", "repo-exit-factory", "import-exit"):
        torch.save(weights, repo / f"models/{name}.pt")
    (repo / "evil_factory.py").write_text("import sys\n\n\ndef build():\n    sys.exit(0)\n")
    (repo / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n\n\ndef build():\n    pass\n")
    (repo / "evil_metric.py").write_text("def score(outputs, labels):\n    raise SystemExit(0)\n")
    (repo / "child_exit.py").write_text(      # would pass in the parent; exits in an isolated child
        "import sys\n\n\ndef score(outputs, labels):\n"
        "    main = getattr(sys.modules['__main__'], '__spec__', None)\n"
        "    if main is not None and main.name == 'edgegate.trust.isolation':\n"
        "        sys.exit(0)\n"
        "    return 50.0\n")
    (repo / "good_metric.py").write_text(
        "import numpy as np\n\n\ndef score(outputs, labels):\n"
        "    return float(np.mean(outputs.reshape(len(labels), -1).argmax(1) == labels) * 100)\n")
    commit_all(repo, "models")
    proc = edgegate("run", "--base", "HEAD~1", "--no-cache", cwd=repo)
    report_path = repo / ".edgegate-out/report.json"
    assert report_path.is_file(), proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    return proc, report, {m["path"]: m for m in report["models"]}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_metric_outside_the_repository_is_refused_before_import(reference_run, name):
    proc, _, models = reference_run
    model = models[f"models/{name}.onnx"]
    assert model["status"] == "error", model
    err = model["error"]
    assert err["kind"] == "config" and err["field"] == "evaluation.metric", err
    assert "file in the repository" in err["message"] + err["fix"], err
    assert REFUSED[name] in err["message"]
    assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr   # 'this' never imported


def test_a_factory_outside_the_repository_is_refused(reference_run):
    _, _, models = reference_run
    model = models["models/exit-factory.pt"]
    assert model["status"] == "error", model
    err = model["error"]
    assert err["kind"] == "config" and err["field"] == "factory" and "sys:exit" in err["message"]
    assert "file in the repository" in err["message"] + err["fix"]


@pytest.mark.parametrize("path, words", [
    ("models/repo-exit-factory.pt", "sys.exit(0)"),
    ("models/import-exit.pt", "sys.exit(0)"),
    ("models/metric-exit.onnx", "sys.exit(0)"),
])
def test_code_in_the_repository_that_exits_is_an_error_of_its_model(reference_run, path, words):
    _, _, models = reference_run
    model = models[path]
    assert model["status"] == "error", model
    assert model["error"]["kind"] in ("input", "config") and words in model["error"]["message"]


def test_a_metric_that_exits_in_the_isolated_child_is_an_error_row(reference_run):
    # a custom metric only ever runs in a child (its accuracy before optimization is taken in
    # the child that prepares the model): the exit is this model's error, before any device
    _, _, models = reference_run
    model = models["models/child-metric-exit.onnx"]
    assert model["status"] == "error" and not model["results"], model
    assert model["error"]["kind"] == "input" and "sys.exit(0)" in model["error"]["message"]


def test_the_run_still_ends_with_exit_2_a_report_and_the_good_model_gated(reference_run):
    proc, report, models = reference_run
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert report["verdict"] == "error" and report["exit_code"] == 2
    good = models["models/good.onnx"]
    assert good["status"] in ("passed", "failed"), good.get("error")
    assert good["results"][0]["metrics"]["accuracy_before"] is not None
    assert "Traceback" not in proc.stderr


def test_a_raised_keyboardinterrupt_is_contained_but_a_real_ctrl_c_is_not():
    code = """
import os, signal
from edgegate.trust import repo_code as rc
assert not rc.contained(KeyboardInterrupt())            # no handler: cannot tell, so it stops
assert rc.contained(SystemExit(0)) and rc.contained(ValueError())
rc.watch_interrupts()
assert rc.contained(KeyboardInterrupt())                # raised by code: that model's error
try:
    os.kill(os.getpid(), signal.SIGINT)
    import time; time.sleep(5)
except KeyboardInterrupt as exc:
    assert not rc.contained(exc)                        # the user's Ctrl-C: the run stops
    print("stopped")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "stopped", proc.stderr


def test_a_status_description_shows_bidi_and_control_characters():
    from edgegate.github.statuses import clip

    assert clip("evil\u202egnp.onnx: \x1b[2Jerror") == "evil<U+202E>gnp.onnx: \\x1b[2Jerror"
