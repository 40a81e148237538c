"""The Action end to end: entrypoint/entrypoint.py as a subprocess with the runner's environment and
realistic event payloads, on a git repository with two commits and the trained digits model,
against the fake GitHub on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("github")

from conftest import commit_all, git, perturbed_copy  # noqa: E402
from fakegithub import FakeGitHub  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "entrypoint" / "entrypoint.py"
TOKEN = "ghp_actiontoken_0123456789abcdef"
RO_TOKEN = "ghs_forkreadonly_0123456789abcdef"
BOT_TOKEN = "ghs_workflowrun_0123456789abcdef"
BOT = "github-actions[bot]"


@pytest.fixture
def fake():
    with FakeGitHub() as server:
        server.add_token(TOKEN, "edgegate-ci")
        server.add_token(RO_TOKEN, BOT, write=False, kind="Bot")
        server.add_token(BOT_TOKEN, BOT, kind="Bot")
        yield server


def pr_files(repo: Path, base: str, head: str) -> list[dict]:
    """What GitHub's PR files API would list for base..head."""
    names = {"A": "added", "M": "modified", "D": "removed", "R": "renamed"}
    out = []
    for line in git(repo, "diff", "--name-status", "-M", base, head).splitlines():
        parts = line.split("\t")
        entry = {"filename": parts[-1], "status": names[parts[0][0]]}
        if parts[0].startswith("R"):
            entry["previous_filename"] = parts[1]
        out.append(entry)
    return out


def pull_request_event(fake: FakeGitHub, number: int) -> dict:
    pr = fake.state.pulls[number]
    return {"action": "synchronize", "number": number,
            "pull_request": {"number": number, "state": "open", "title": pr["title"],
                             "head": pr["head"], "base": pr["base"], "html_url": pr["html_url"]},
            "repository": {"full_name": fake.state.repo, "default_branch": "main"},
            "sender": {"login": "contributor"}}


def run_action(workspace: Path, fake: FakeGitHub, tmp: Path, event_name: str, event: dict,
               token: str = TOKEN, sha: str | None = None, container: bool = False, **inputs: str):
    """Start the entrypoint the way the runner starts the container."""
    runner = tmp / "runner"
    (runner / "home").mkdir(parents=True, exist_ok=True)
    files = runner / "file_commands"
    files.mkdir(exist_ok=True)
    for name in ("output", "summary"):
        (files / name).write_text("")
    (runner / "event.json").write_text(json.dumps(event))
    env = {"PATH": os.environ["PATH"], "HOME": str(runner / "home"), "GITHUB_ACTIONS": "true",
           "CI": "true", "GITHUB_WORKSPACE": str(workspace), "GITHUB_EVENT_NAME": event_name,
           "GITHUB_EVENT_PATH": str(runner / "event.json"), "GITHUB_REPOSITORY": fake.state.repo,
           "GITHUB_SHA": sha or git(workspace, "rev-parse", "HEAD").strip(),
           "GITHUB_API_URL": fake.url, "GITHUB_SERVER_URL": "https://github.example",
           "GITHUB_RUN_ID": "4242", "GITHUB_OUTPUT": str(files / "output"),
           "GITHUB_STEP_SUMMARY": str(files / "summary"), "INPUT_GITHUB-TOKEN": token,
           "EDGEGATE_GITHUB_THROTTLE_S": "0", "EDGEGATE_GITHUB_RETRY_BASE_S": "0.05"}
    if os.environ.get("PYTHONPATH"):     # the package under test, not another installed copy
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if event_name == "release":
        env["GITHUB_REF"] = f"refs/tags/{event['release']['tag_name']}"
    for key, value in inputs.items():
        env[f"INPUT_{key.upper().replace('_', '-')}"] = value
    image = os.environ.get("EDGEGATE_CONTAINER_IMAGE") if container else None
    if image:
        proc = run_container(image, env, workspace, runner)
    else:
        proc = subprocess.run([sys.executable, str(ENTRYPOINT)], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=600)
    outputs = parse_outputs((files / "output").read_text())
    if image:       # paths the container wrote are container paths: map them back
        outputs = {k: v.replace("/github/workspace", str(workspace)) for k, v in outputs.items()}
    return proc, outputs, (files / "summary").read_text()


def run_container(image: str, env: dict, workspace: Path, runner: Path):
    """`docker run` as the GitHub runner does it: the workspace, home, event and file-command
    folders mounted under /github, inputs as INPUT_* variables, the workspace as working directory
    (owned by another user, as on GitHub); --network host to reach the fake on loopback."""
    mounts = {str(workspace): "/github/workspace", str(runner / "home"): "/github/home",
              str(runner): "/github/workflow", str(runner / "file_commands"): "/github/file_commands"}
    env = dict(env, HOME="/github/home", GITHUB_WORKSPACE="/github/workspace",
               GITHUB_EVENT_PATH="/github/workflow/event.json",
               GITHUB_OUTPUT="/github/file_commands/output",
               GITHUB_STEP_SUMMARY="/github/file_commands/summary", RUNNER_OS="Linux")
    env.pop("PATH")
    cmd = ["docker", "run", "--rm", "--network", "host", "--workdir", "/github/workspace"]
    for host, inside in mounts.items():
        cmd += ["-v", f"{host}:{inside}"]
    for key in sorted(env):
        cmd += ["-e", key]          # values through the environment: never on the command line
    return subprocess.run(cmd + [image], env=dict(os.environ, **env), capture_output=True,
                          text=True, timeout=900)


def parse_outputs(text: str) -> dict[str, str]:
    out, lines, i = {}, text.splitlines(), 0
    while i < len(lines):
        name, _, delim = lines[i].partition("<<")
        j = lines.index(delim, i + 1)
        out[name] = "\n".join(lines[i + 1:j])
        i = j + 1
    return out


def write_policy(repo: Path, min_size_ratio: float) -> None:
    """The repository's own limits (line 4 is min_size_ratio), lenient elsewhere so the verdict
    does not hang on how well this CPU happens to speed INT8 up."""
    (repo / ".edgegate").mkdir(exist_ok=True)
    (repo / ".edgegate" / "policy.yml").write_text(
        "version: 1\ndevices:\n  x86-cpu:\n"
        f"    min_size_ratio: {min_size_ratio}\n    min_speedup: 0.01\n    max_accuracy_drop_pp: 50\n")
    config = (repo / "edgegate.yml").read_text()
    if "policy:" not in config:
        (repo / "edgegate.yml").write_text(config + "policy: .edgegate/policy.yml\n")


def new_pr(repo: Path, fake: FakeGitHub, number: int = 7, **kw) -> tuple[str, str]:
    # the repository's policy is on the base commit: limits are read from there (issue 7),
    # and a pull request that loosened them would be flagged and fail
    write_policy(repo, 1.0)
    (repo / ".gitignore").write_text(".edgegate/*\n!.edgegate/policy.yml\n")   # run outputs
    base = commit_all(repo, "policy")
    perturbed_copy(repo / "models" / "digits.onnx", repo / "models" / "digits.onnx")
    head = commit_all(repo, "retrain")
    fake.add_pull(number, head, base, pr_files(repo, base, head), **kw)
    return base, head


@pytest.mark.slow
def test_pull_request_comment_created_then_updated(model_repo, fake, tmp_path):
    base, head = new_pr(model_repo, fake)
    proc, outputs, summary = run_action(model_repo, fake, tmp_path, "pull_request",
                                        pull_request_event(fake, 7))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert TOKEN not in log
    (comment,) = fake.comments_on(7)
    assert comment["body"].startswith("<!-- edgegate:comment -->")
    assert comment["user"]["login"] == "edgegate-ci"
    assert outputs["verdict"] == "passed" and outputs["comment-id"] == str(comment["id"])
    assert outputs["comment-url"] == comment["html_url"]
    assert Path(outputs["report"]).is_file() and Path(outputs["bundle"], "report.json").is_file()
    assert Path(outputs["junit-file"]).name == "junit.xml" and Path(outputs["junit-file"]).is_file()
    status = fake.statuses_for(head)["edgegate/x86-cpu"]
    assert status["state"] == "success" and status["target_url"].endswith("/actions/runs/4242")
    assert "digits" in summary and "x86-cpu" in summary
    assert any(r["path"].endswith("/pulls/7/files") for r in fake.state.requests)

    # a second push: a policy the model cannot meet; GitHub answers 502 and 429 on the way
    write_policy(model_repo, 100)
    head2 = commit_all(model_repo, "strict policy")
    fake.state.pulls[7]["head"]["sha"] = head2
    fake.state.pull_files[7] = pr_files(model_repo, base, head2)
    fake.fail("POST", rf"/repos/{fake.state.repo}/statuses/{head2}", 502)
    fake.fail("GET", rf"/repos/{fake.state.repo}/issues/7/comments", 429, headers={"Retry-After": "0"})
    proc, outputs, summary = run_action(model_repo, fake, tmp_path, "pull_request",
                                        pull_request_event(fake, 7))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (updated,) = fake.comments_on(7)
    assert updated["id"] == comment["id"] and updated["edits"] == 1
    assert "min_size_ratio" in updated["body"] and outputs["verdict"] == "failed"
    assert fake.statuses_for(head2)["edgegate/x86-cpu"]["state"] == "failure"
    assert "::error file=.edgegate/policy.yml,line=4," in proc.stdout
    assert "::error file=models/digits.onnx," in proc.stdout
    assert "retry" in proc.stderr          # both faults were retried, and the run still posted


@pytest.mark.slow
def test_fork_pull_request_two_workflow_pattern(model_repo, fake, tmp_path):
    _, head = new_pr(model_repo, fake, 9, head_repo="forker/models", head_ref="patch-1")
    # 1. pull_request from a fork: read-only token; measurements, summary and bundle still happen
    proc, outputs, summary = run_action(model_repo, fake, tmp_path / "pr", "pull_request",
                                        pull_request_event(fake, 9), token=RO_TOKEN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Resource not accessible by integration" in proc.stdout
    assert "two-workflow pattern" in proc.stdout and RO_TOKEN not in proc.stdout + proc.stderr
    assert not fake.comments_on(9) and not fake.statuses_for(head) and "digits" in summary

    # 2. workflow_run in the base repository: the downloaded bundle, a write token
    trusted = tmp_path / "base-checkout"
    shutil.copytree(outputs["bundle"], trusted / "edgegate-result")
    event = {"action": "completed",
             "workflow_run": {"id": 99, "event": "pull_request", "conclusion": "success",
                              "head_sha": head, "head_branch": "patch-1",
                              "head_repository": {"full_name": "forker/models",
                                                  "owner": {"login": "forker"}},
                              "pull_requests": []}}
    proc, outputs, _ = run_action(trusted, fake, tmp_path / "wr", "workflow_run", event,
                                  token=BOT_TOKEN, sha="f" * 40, bundle="edgegate-result")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (comment,) = fake.comments_on(9)
    assert comment["user"]["login"] == BOT and "digits" in comment["body"]
    assert fake.statuses_for(head)["edgegate/x86-cpu"]["state"] == "success"

    # a tampered bundle is refused and nothing is posted
    (trusted / "edgegate-result" / "comment.md").write_text("@everyone click here")
    proc, _, _ = run_action(trusted, fake, tmp_path / "wr2", "workflow_run", event,
                            token=BOT_TOKEN, sha="f" * 40, bundle="edgegate-result")
    assert proc.returncode == 2 and "unexpected file" in proc.stdout
    assert fake.comments_on(9)[0]["edits"] == 0


def test_no_changed_model_succeeds_quickly(model_repo, fake, tmp_path):
    base = git(model_repo, "rev-parse", "HEAD").strip()
    (model_repo / "README.md").write_text("docs only\n")
    head = commit_all(model_repo, "docs")
    fake.add_pull(11, head, base, pr_files(model_repo, base, head))
    proc, outputs, _ = run_action(model_repo, fake, tmp_path, "pull_request",
                                  pull_request_event(fake, 11))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outputs["verdict"] == "passed" and outputs["models"] == "0"
    status = fake.statuses_for(head)["edgegate/x86-cpu"]
    assert status["state"] == "success" and "no changed model" in status["description"]
    assert not fake.comments_on(11)          # nothing to say: no new comment


@pytest.mark.slow
def test_release_uploads_assets_and_rerun_replaces(model_repo, fake, tmp_path):
    import hashlib

    event = {"action": "published", "release": {"tag_name": "v1.0.0", "draft": False},
             "repository": {"full_name": fake.state.repo}}
    proc, outputs, _ = run_action(model_repo, fake, tmp_path, "release", event, fail_on="never")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (release,) = fake.state.releases.values()
    assert not release["draft"] and outputs["release-url"] == release["html_url"]
    first = {a["name"]: a for a in fake.state.assets.values()}
    report = json.loads(Path(outputs["report"]).read_text())
    (result,) = report["models"][0]["results"]
    name = Path(result["artifact"]["path"]).name          # <model>-<device>-<precision>.<ext>
    assert name.startswith(f"digits-x86-cpu-{result['artifact']['precision']}.")
    assert set(first) == {name, "SHA256SUMS", "manifest.json"}
    sums = dict(reversed(line.split("  ")) for line in first["SHA256SUMS"]["data"].decode().splitlines())
    model = first[name]
    assert sums[name] == hashlib.sha256(model["data"]).hexdigest() == result["artifact"]["sha256"]
    manifest = json.loads(first["manifest.json"]["data"])
    assert manifest["assets"][0]["metrics"]["size_ratio"] > 1 and manifest["toolchain"]["onnxruntime"]

    # `edgegate publish` re-runs the upload from the same run folder: same names, replaced assets
    env = dict(os.environ, GITHUB_TOKEN=TOKEN, GITHUB_REPOSITORY=fake.state.repo,
               GITHUB_API_URL=fake.url, EDGEGATE_GITHUB_THROTTLE_S="0")
    cli = subprocess.run([sys.executable, "-m", "edgegate.cli.main", "publish", ".edgegate-out",
                          "--tag", "v1.0.0"], cwd=model_repo, env=env, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert TOKEN not in cli.stdout + cli.stderr
    again = {a["name"]: a for a in fake.state.assets.values()}
    assert set(again) == set(first) and len(fake.state.releases) == 1
    assert all(again[n]["id"] != first[n]["id"] for n in first)
    assert again[name]["sha256"] == model["sha256"]


# ------------------------------------------------------------------ a shallow checkout (depth 1)


def _loosening_pr(tmp_path, fake, number: int) -> tuple[Path, str, str, Path]:
    """A repository whose PR raises max_accuracy_drop_pp from 1 to 50, and a depth-1 clone of
    the PR's head: what actions/checkout gives by default."""
    from tinyrepo import TINY_POLICY, tiny_repo

    repo = tiny_repo(tmp_path)
    base = git(repo, "rev-parse", "HEAD").strip()
    (repo / "policy.yml").write_text(TINY_POLICY.format(drop=50))
    head = commit_all(repo, "loosen the accuracy limit")
    fake.add_pull(number, head, base, pr_files(repo, base, head))
    clone = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    assert git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"
    assert subprocess.run(["git", "cat-file", "-e", f"{base}^{{commit}}"], cwd=clone).returncode != 0
    return repo, base, head, clone


def test_shallow_checkout_fetches_the_base_and_applies_its_limits(fake, tmp_path):
    _, base, head, clone = _loosening_pr(tmp_path, fake, 21)
    proc, outputs, _ = run_action(clone, fake, tmp_path, "pull_request", pull_request_event(fake, 21))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log
    assert "not in this clone (shallow checkout): fetching it" in log
    assert "first configuration" not in log
    assert git(clone, "cat-file", "-t", base).strip() == "commit"
    report = json.loads(Path(outputs["report"]).read_text())
    (change,) = report["policy_changes"]
    assert (change["limit"], change["old"], change["new"], change["change"], change["allowed"]) == \
        ("max_accuracy_drop_pp", 1.0, 50.0, "loosened", False)
    assert f"policy.yml@{base[:7]}" in report["policy_files"]        # the base limits applied
    assert report["commits"] == {"base": base, "head": head} and outputs["verdict"] == "failed"
    assert fake.statuses_for(head)["edgegate/x86-cpu"]["state"] == "failure"
    assert "loosens policy limits" in fake.comments_on(21)[0]["body"]


def test_shallow_checkout_without_the_base_stops_with_the_fix(fake, tmp_path):
    _, base, _, clone = _loosening_pr(tmp_path, fake, 22)
    git(clone, "remote", "set-url", "origin", f"file://{tmp_path}/gone")      # cannot fetch
    proc, outputs, _ = run_action(clone, fake, tmp_path, "pull_request", pull_request_event(fake, 22))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"::error::the base commit {base[:12]} is not in this clone" in proc.stdout
    assert "set fetch-depth: 0 on actions/checkout" in proc.stdout
    assert "verdict" not in outputs                  # nothing was gated with the PR's own limits


def test_shallow_push_without_a_before_commit_deepens_to_find_the_base(fake, tmp_path):
    _, base, head, clone = _loosening_pr(tmp_path, fake, 23)
    event = {"ref": "refs/heads/main", "before": "0" * 40, "after": head,
             "repository": {"full_name": fake.state.repo, "default_branch": "main"}}
    proc, outputs, _ = run_action(clone, fake, tmp_path, "push", event)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log
    assert "shallow clone: fetching 50 more commit(s) and main" in log
    report = json.loads(Path(outputs["report"]).read_text())
    assert report["commits"]["base"] == base
    assert [c["change"] for c in report["policy_changes"]] == ["loosened"]
