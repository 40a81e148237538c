"""edgegate.github against the stateful fake GitHub over real HTTP (PyGithub through base_url)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

pytest.importorskip("github")

from fakegithub import FakeGitHub  # noqa: E402

from edgegate.errors import GitHubError, InputError, UnsafeInputError  # noqa: E402
from edgegate.github.actions_env import Annotation, Workflow, input_value  # noqa: E402
from edgegate.github.bundle import read_bundle, write_bundle  # noqa: E402
from edgegate.github.client import ACTIONS_BOT, connect  # noqa: E402
from edgegate.github.comments import upsert_comment  # noqa: E402
from edgegate.github.faults import RetryPolicy  # noqa: E402
from edgegate.github.pulls import changed_files, pull_for_sha  # noqa: E402
from edgegate.github.releases import MAX_ASSET_BYTES, Asset, collect_assets, publish  # noqa: E402
from edgegate.github.statuses import post_statuses, statuses_for  # noqa: E402
from edgegate.report.model import (Artifact, Check, DeviceResult, Metrics, ModelReport, Report,  # noqa: E402
                                   write_report)
from edgegate.report.render import MARKER  # noqa: E402

TOKEN = "ghp_faketoken0123456789abcdef"
HEAD = "a" * 40
BASE = "b" * 40


@pytest.fixture
def fake():
    with FakeGitHub() as server:
        server.add_token(TOKEN, "edgegate-bot")
        server.add_pull(7, HEAD, BASE, [])
        yield server


def client(fake, token=TOKEN, sleeps=None):
    retry = RetryPolicy(base_delay_s=0.01, sleep=(sleeps.append if sleeps is not None else (lambda s: None)))
    return connect(token, fake.state.repo, fake.url, retry=retry, throttle_s=0)


def report(name="digits", status="passed", device="x86-cpu", artifact=None) -> Report:
    check = Check(limit="max_accuracy_drop_pp", metric="accuracy_drop_pp", threshold=1.0,
                  measured=2.5 if status == "failed" else 0.3, passed=status != "failed",
                  source=".edgegate/policy.yml:4")
    result = DeviceResult(device=device, target="onnxruntime", status=status, artifact=artifact,
                          metrics=Metrics(size_ratio=3.4, speedup=1.2,
                                          accuracy_drop_pp=check.measured),
                          checks=[check], violations=[check] if status == "failed" else [])
    return Report(edgegate_version="0.1.0", created_at="2026-01-01T00:00:00+00:00",
                  verdict="failed" if status == "failed" else "passed",
                  exit_code=1 if status == "failed" else 0, toolchain={"onnxruntime": "1.32.0"},
                  models=[ModelReport(path=f"models/{name}.onnx", name=name,
                                      status="failed" if status == "failed" else "passed",
                                      results=[result])])


def test_one_comment_created_then_updated_in_place(fake):
    gh = client(fake)
    # someone else's comment holding the marker (a quote, say) is never touched
    fake.add_token("ghp_other", "alice")
    upsert_comment(client(fake, "ghp_other"), 7, f"{MARKER} quoting the bot")
    first = upsert_comment(gh, 7, f"{MARKER}\nrun 1")
    second = upsert_comment(gh, 7, f"{MARKER}\nrun 2")
    mine = [c for c in fake.comments_on(7) if c["user"]["login"] == "edgegate-bot"]
    assert first.created and not second.created and first.id == second.id
    assert len(mine) == 1 and mine[0]["body"].endswith("run 2") and mine[0]["edits"] == 1
    alice = [c for c in fake.comments_on(7) if c["user"]["login"] == "alice"]
    assert alice[0]["body"] == f"{MARKER} quoting the bot"


def test_installation_token_comments_as_the_actions_bot(fake):
    fake.add_token("ghs_installation", ACTIONS_BOT, kind="Bot")     # GET /user answers 403
    gh = client(fake, "ghs_installation")
    assert gh.login() == ACTIONS_BOT
    a = upsert_comment(gh, 7, "first")
    b = upsert_comment(gh, 7, "second")
    assert a.id == b.id and len(fake.comments_on(7)) == 1
    assert fake.comments_on(7)[0]["body"].startswith(MARKER)


def test_retries_on_5xx_and_rate_limits_without_duplicating(fake):
    sleeps: list[float] = []
    gh = client(fake, sleeps=sleeps)
    path = rf"/repos/{fake.state.repo}/issues/7/comments"
    fake.fail("GET", path, 502)
    fake.fail("POST", path, 503)
    fake.fail("GET", path, 429, headers={"Retry-After": "3"})
    fake.fail("POST", path, 403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "0"},
              body={"message": "API rate limit exceeded"})
    ref = upsert_comment(gh, 7, "body")
    assert ref.created and len(fake.comments_on(7)) == 1
    assert 3.0 in sleeps and len(sleeps) == 4        # Retry-After honoured; every fault retried
    statuses = [r["status"] for r in fake.state.requests if r["path"] == path]
    assert statuses.count(201) == 1 and {502, 503, 429, 403} <= set(statuses)


def test_persistent_failure_is_a_github_error_without_the_token(fake):
    gh = client(fake)
    fake.fail("POST", rf"/repos/{fake.state.repo}/statuses/{HEAD}", 500, times=10,
              body={"message": f"boom {TOKEN}"})
    with pytest.raises(GitHubError) as info:
        post_statuses(gh, HEAD, statuses_for(report()))
    assert "500" in info.value.full and TOKEN not in info.value.full
    assert sum(r["path"].endswith(HEAD) for r in fake.state.requests) == 5     # attempts


def test_fork_token_403_explains_the_two_workflow_pattern(fake):
    fake.add_token("ghp_readonly", "edgegate-bot", write=False)
    with pytest.raises(GitHubError) as info:
        upsert_comment(client(fake, "ghp_readonly"), 7, "hello")
    text = info.value.full
    assert "Resource not accessible by integration" in text
    assert "fork" in text and "workflow_run" in text and "mode: comment" in text


def test_statuses_per_device_within_140_characters(fake):
    gh = client(fake)
    long_name = "a-very-long-model-name-" * 10
    rep = report(name=long_name, status="failed")
    lines = statuses_for(rep, devices=["x86-cpu", "raspberry-pi-4"])
    assert post_statuses(gh, HEAD, lines, "https://ci.example/run/1") == 2
    got = fake.statuses_for(HEAD)
    assert got["edgegate/x86-cpu"]["state"] == "failure"
    assert "max_accuracy_drop_pp" in got["edgegate/x86-cpu"]["description"] or \
        len(got["edgegate/x86-cpu"]["description"]) == 140
    assert got["edgegate/raspberry-pi-4"]["state"] == "success"
    assert all(len(s["description"]) <= 140 for s in got.values())


def test_pr_files_paginated_and_mapped(fake):
    files = [{"filename": f"models/m{i}.onnx", "status": "added"} for i in range(150)]
    files += [{"filename": "models/new.onnx", "previous_filename": "models/old.onnx", "status": "renamed"},
              {"filename": "models/gone.onnx", "status": "removed"}]
    fake.add_pull(8, "c" * 40, BASE, files, head_repo="forker/models", head_ref="patch-1")
    changes = changed_files(client(fake), 8)
    assert len(changes) == 152
    assert changes[150].status == "renamed" and changes[150].old_path == "models/old.onnx"
    assert changes[151].status == "deleted"
    assert sum(r["path"].endswith("/pulls/8/files") for r in fake.state.requests) == 2   # 2 pages
    # the fork PR is found from its head SHA alone (workflow_run.pull_requests is empty for forks)
    assert pull_for_sha(client(fake), "c" * 40, "forker", "patch-1") == 8
    assert pull_for_sha(client(fake), "d" * 40) is None


def _artifact_run(tmp_path, content: bytes):
    out = tmp_path / "out"
    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    f = out / "artifacts" / "digits-x86-cpu-int8.onnx"
    f.write_bytes(content)
    art = Artifact(path="artifacts/digits-x86-cpu-int8.onnx",
                   sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content),
                   precision="int8", format="onnx")
    return out, report(artifact=art)


def test_release_draft_upload_publish_and_rerun_replaces(fake, tmp_path):
    gh = client(fake)
    out, rep = _artifact_run(tmp_path, b"model v1")
    url = publish(gh, "v1.0.0", collect_assets(rep, out, out / "release"))
    (release,) = fake.state.releases.values()
    assert url.endswith("/releases/tag/v1.0.0") and release["draft"] is False
    names = {a["name"]: a for a in fake.state.assets.values()}
    assert set(names) == {"digits-x86-cpu-int8.onnx", "SHA256SUMS", "manifest.json"}
    sums = names["SHA256SUMS"]["data"].decode()
    assert f"{hashlib.sha256(b'model v1').hexdigest()}  digits-x86-cpu-int8.onnx" in sums
    manifest = json.loads(names["manifest.json"]["data"])
    assert manifest["assets"][0]["device"] == "x86-cpu" and manifest["toolchain"]["onnxruntime"]

    out, rep = _artifact_run(tmp_path, b"model v2")
    publish(gh, "v1.0.0", collect_assets(rep, out, out / "release"))
    assert len(fake.state.releases) == 1
    again = {a["name"]: a for a in fake.state.assets.values()}
    assert set(again) == set(names)
    assert again["digits-x86-cpu-int8.onnx"]["data"] == b"model v2"
    assert again["digits-x86-cpu-int8.onnx"]["id"] != names["digits-x86-cpu-int8.onnx"]["id"]


def test_asset_of_2_gib_is_refused_before_any_upload(fake, tmp_path):
    big = tmp_path / "huge.onnx"
    with big.open("wb") as fh:          # sparse: no disk used
        fh.truncate(MAX_ASSET_BYTES)
    asset = Asset("huge.onnx", big, os.path.getsize(big), "0" * 64)
    with pytest.raises(InputError, match="2 GiB"):
        publish(client(fake), "v2", [asset])
    assert not fake.state.releases and not any(r["method"] == "POST" for r in fake.state.requests)


def test_bundle_round_trip_and_tampering(tmp_path):
    out = tmp_path / "out"
    write_report(report(), out / "report.json")
    bundle = write_bundle(out, tmp_path / "bundle", pr_number=7, head_sha=HEAD)
    got = read_bundle(bundle)
    assert got.head_sha == HEAD and got.pr_number == 7 and got.report.verdict == "passed"
    (bundle / "comment.md").write_text("@everyone injected")
    with pytest.raises(UnsafeInputError):
        read_bundle(bundle)
    (bundle / "comment.md").unlink()
    (bundle / "report.json").write_text(json.dumps({"schema_version": 1, "verdict": "passed",
                                                    "evil": True}))
    with pytest.raises(InputError):
        read_bundle(bundle)


def test_outputs_summary_and_annotations(tmp_path, capsys):
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "sum"),
           "INPUT_GITHUB-TOKEN": "x1", "INPUT_FAIL_ON": "never"}
    assert input_value(env, "github-token") == "x1" and input_value(env, "fail-on") == "never"
    import sys

    wf = Workflow(env, sys.stdout)
    wf.set_output("comment-url", "https://x/1\nsecond line")
    text = (tmp_path / "out").read_text()
    assert text.startswith("comment-url<<ghadelimiter_") and "second line" in text
    assert wf.append_summary("a" * 600_000) == 600_000
    written = wf.append_summary("b" * 600_000)
    assert 0 < written < 600_000 and (tmp_path / "sum").stat().st_size <= 1 << 20
    wf.annotate(Annotation("error", "50% worse\nline 2", "pol icy,x.yml", 4, "t: a"))
    line = capsys.readouterr().out.strip()
    assert line == "::error file=pol icy%2Cx.yml,line=4,title=t%3A a::50%25 worse%0Aline 2"
