"""The Action's container image, run the way the GitHub runner runs it, against a fixture
repository and the fake GitHub. Needs a built image: `make action-test` builds it (private dockerd
on this machine) and runs this file with EDGEGATE_CONTAINER_IMAGE set; otherwise it skips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.container, pytest.mark.slow]

IMAGE = os.environ.get("EDGEGATE_CONTAINER_IMAGE")
if not IMAGE:
    pytest.skip("EDGEGATE_CONTAINER_IMAGE is not set (run `make action-test`)", allow_module_level=True)

from conftest import commit_all  # noqa: E402
from test_action import TOKEN, fake, new_pr, pull_request_event, run_action, write_policy  # noqa: E402,F401


def chown_tree(root: Path, uid: int = 1001) -> None:
    """The runner's checkout belongs to the runner's user, not the container's root."""
    for path in [root, *root.rglob("*")]:
        os.lchown(path, uid, uid)


def test_container_comments_updates_sets_statuses_and_releases(model_repo, fake, tmp_path,  # noqa: F811
                                                              monkeypatch):
    # the host's git (root) must still work in the checkout the test hands to user 1001
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "safe.directory")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "*")
    base, head = new_pr(model_repo, fake)
    chown_tree(model_repo)
    proc, outputs, summary = run_action(model_repo, fake, tmp_path / "r1", "pull_request",
                                        pull_request_event(fake, 7), container=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert TOKEN not in log
    (comment,) = fake.comments_on(7)
    assert outputs["verdict"] == "passed" and outputs["comment-id"] == str(comment["id"])
    assert fake.statuses_for(head)["edgegate/x86-cpu"]["state"] == "success"
    assert "digits" in summary and Path(outputs["report"]).is_file()

    write_policy(model_repo, 100)
    head2 = commit_all(model_repo, "strict policy")
    fake.state.pulls[7]["head"]["sha"] = head2
    chown_tree(model_repo)
    proc, outputs, _ = run_action(model_repo, fake, tmp_path / "r2", "pull_request",
                                  pull_request_event(fake, 7), container=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (updated,) = fake.comments_on(7)
    assert updated["id"] == comment["id"] and updated["edits"] == 1
    assert fake.statuses_for(head2)["edgegate/x86-cpu"]["state"] == "failure"
    assert "::error file=.edgegate/policy.yml,line=4," in proc.stdout

    event = {"action": "published", "release": {"tag_name": "v1.0.0"}}
    proc, outputs, _ = run_action(model_repo, fake, tmp_path / "r3", "release", event,
                                  container=True, fail_on="never")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {a["name"]: a for a in fake.state.assets.values()}
    assert {"SHA256SUMS", "manifest.json"} < set(names) and len(names) == 3
    sums = dict(reversed(line.split("  ")) for line in names["SHA256SUMS"]["data"].decode().splitlines())
    assert all(names[n]["sha256"] == sha for n, sha in sums.items())
    assert json.loads(names["manifest.json"]["data"])["toolchain"]["onnxruntime"]
