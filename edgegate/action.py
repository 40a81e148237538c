"""The GitHub Action's flow, from the Actions environment to an exit code.

Three modes (input ``mode``; ``auto`` picks by event):

- ``gate`` (pull_request, push): find the changed models (PR files API, git diff as fallback),
  run the gate, write report/comment/summary and the result bundle, set outputs, the job summary
  and annotations, update the one PR comment, set a commit status per device, exit by verdict.
- ``comment`` (workflow_run, the fork-safe half): validate a downloaded result bundle, resolve the
  PR from the trusted head SHA, post the comment and the statuses.
- ``publish`` (release, tag push): gate every configured model and upload the artifacts as
  release assets with SHA256SUMS and manifest.json.

Side effects come in through ``ActionContext`` (the GitHub client factory, git, the clock, the
workspace, the log streams); only ``entrypoint/`` builds the real ones.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from edgegate.config.files import OUT_DIR
from edgegate.config.load import LoadedConfig, load_config
from edgegate.discover import Git, configured_models
from edgegate.discover.git import MISSING_COMMIT_FIX, Change
from edgegate.errors import ConfigError, EdgeGateError, GitHubError, InputError
from edgegate.github.actions_env import (Annotation, Workflow, input_choice, input_list, input_value,
                                         read_event)
from edgegate.github.annotations import annotations_for
from edgegate.github.bundle import read_bundle, write_bundle
from edgegate.github.faults import redact
from edgegate.trust.logsafe import CommandPause, log_text
from edgegate.progress import Progress
from edgegate.report.model import Report

EXIT_OK, EXIT_INTERNAL = 0, 3
ZERO_SHA = "0" * 40
MODES = ("auto", "gate", "comment", "publish")


@dataclass(frozen=True)
class ActionInputs:
    mode: str = "auto"
    config: str = "edgegate.yml"
    policy: str | None = None
    devices: list[str] = field(default_factory=list)
    token: str | None = None
    comment: bool = True
    statuses: bool = True
    fail_on: str = "failure"            # failure | error | never
    publish: str = "auto"               # auto | true | false
    tag: str | None = None
    out: str = OUT_DIR
    bundle: str = f"{OUT_DIR}/bundle"
    comment_author: str | None = None


def read_inputs(env: Mapping[str, str]) -> ActionInputs:
    def flag(name: str, default: str) -> bool:
        return input_choice(env, name, ("true", "false"), default) == "true"

    return ActionInputs(
        mode=input_choice(env, "mode", MODES, "auto"),
        config=input_value(env, "config") or "edgegate.yml",
        policy=input_value(env, "policy"),
        devices=input_list(env, "devices"),
        token=input_value(env, "github-token") or env.get("GITHUB_TOKEN"),
        comment=flag("comment", "true"),
        statuses=flag("statuses", "true"),
        fail_on=input_choice(env, "fail-on", ("failure", "error", "never"), "failure"),
        publish=input_choice(env, "publish", ("auto", "true", "false"), "auto"),
        tag=input_value(env, "tag"),
        out=input_value(env, "out") or OUT_DIR,
        bundle=input_value(env, "bundle") or f"{OUT_DIR}/bundle",
        comment_author=input_value(env, "comment-author"),
    )


@dataclass
class ActionContext:
    env: Mapping[str, str]
    workspace: Path
    connect: Callable[[str, str], object]       # (token, "owner/name") -> GitHubRepo
    git: Callable[[Path], Git]
    clock: Callable[[], str]
    stdout: IO[str]                             # workflow commands
    progress: Progress


class PullRequestChanges(Git):
    """Git for everything but the diff, which comes from the PR files API. The base commit must
    be in the clone (``ensure_base`` fetches it): its edgegate.yml and policy set the limits."""

    def __init__(self, root: Path, base_sha: str | None, changes: list[Change]):
        super().__init__(root)
        self.base_sha = base_sha
        self._changes = changes

    def changes(self, base: str, head: str) -> list[Change]:
        return list(self._changes)


def exit_for(report: Report, fail_on: str) -> int:
    if fail_on == "never":
        return EXIT_OK
    if fail_on == "error":
        return report.exit_code if report.exit_code >= 2 else EXIT_OK
    return report.exit_code


def resolve_mode(mode: str, event_name: str, env: Mapping[str, str]) -> str:
    if mode != "auto":
        return mode
    if event_name == "workflow_run":
        return "comment"
    if event_name == "release" or (event_name == "push" and env.get("GITHUB_REF", "").startswith("refs/tags/")):
        return "publish"
    return "gate"


class _Run:
    """One invocation: inputs, event, workflow commands and the (lazily built) GitHub client."""

    def __init__(self, ctx: ActionContext):
        self.ctx = ctx
        self.env = ctx.env
        self.wf = Workflow(ctx.env, ctx.stdout)
        self.inputs = read_inputs(ctx.env)
        self.event_name = ctx.env.get("GITHUB_EVENT_NAME", "")
        self.event = read_event(ctx.env)
        self.repository = ctx.env.get("GITHUB_REPOSITORY", "")
        self._gh: Any = None

    # ------------------------------------------------------------------ helpers
    def log(self, message: str) -> None:
        self.ctx.progress.step(redact(message, [self.inputs.token or ""]))

    def warn(self, message: str) -> None:
        self.wf.annotate(Annotation("warning", redact(message, [self.inputs.token or ""])))

    def github(self, required: bool = False):
        if self._gh is None and self.inputs.token and self.repository:
            self._gh = self.ctx.connect(self.inputs.token, self.repository)
        if self._gh is None and required:
            raise ConfigError("this mode needs the GitHub API: no token or repository", field="github-token",
                              fix="pass 'github-token: ${{ secrets.GITHUB_TOKEN }}' and run inside GitHub Actions")
        return self._gh

    def out_dir(self) -> Path:
        return self.ctx.workspace / self.inputs.out

    def load(self) -> LoadedConfig:
        path = self.ctx.workspace / self.inputs.config
        if not path.is_file():
            raise ConfigError("configuration file not found", file=self.inputs.config,
                              fix="add edgegate.yml at the repository root (edgegate init writes one; docs/configuration.md) or set "
                                  "the 'config' input")
        return load_config(path, root=self.ctx.workspace)

    def target_url(self) -> str | None:
        server, run_id = self.env.get("GITHUB_SERVER_URL"), self.env.get("GITHUB_RUN_ID")
        if server and run_id and self.repository:
            return f"{server}/{self.repository}/actions/runs/{run_id}"
        return None

    def gate(self, loaded: LoadedConfig, models: list[str], base: str | None, git: Git | None) -> Report:
        from edgegate.gate.run import RunOptions, run_gate

        opts = RunOptions(models=models, base=base, devices=self.inputs.devices or None,
                          policy=self.inputs.policy)
        return run_gate(loaded, opts, self.out_dir(), self.ctx.progress, git=git, clock=self.ctx.clock)

    def report_outputs(self, report: Report) -> None:
        out = self.out_dir()
        self.wf.set_output("verdict", report.verdict)
        self.wf.set_output("exit-code", report.exit_code)
        self.wf.set_output("report", out / "report.json")
        self.wf.set_output("comment-file", out / "comment.md")
        self.wf.set_output("summary-file", out / "summary.md")
        self.wf.set_output("models", len(report.models))
        from edgegate.report.junit import write_junit

        self.wf.set_output("junit-file", write_junit(report, out / "junit.xml"))
        from edgegate.report.sarif import write_sarif

        self.wf.set_output("sarif-file", write_sarif(report, out / "results.sarif", self.ctx.workspace))
        for annotation in annotations_for(report, self.ctx.workspace):
            self.wf.annotate(annotation)

    def post(self, report: Report, number: int | None, sha: str | None, devices: list[str],
             comment_body: str, create_comment: bool = True) -> None:
        """Comment and statuses. Failures here warn (the measurements are already written)."""
        from edgegate.github.comments import upsert_comment
        from edgegate.github.statuses import post_statuses, statuses_for

        gh = self.github()
        if gh is None:
            self.warn("no GitHub token: the comment and statuses are skipped")
            return
        if number is not None and self.inputs.comment:
            try:
                ref = upsert_comment(gh, number, comment_body, author=self.inputs.comment_author,
                                     create=create_comment)
                if ref is not None:
                    self.wf.set_output("comment-id", ref.id)
                    self.wf.set_output("comment-url", ref.url)
                    self.log(f"{'created' if ref.created else 'updated'} comment {ref.url}")
            except GitHubError as exc:
                self.warn(f"could not comment on #{number}: {exc.full}")
        if sha and self.inputs.statuses:
            try:
                count = post_statuses(gh, sha, statuses_for(report, devices), self.target_url())
                self.log(f"set {count} commit status(es) on {sha[:12]}")
            except GitHubError as exc:
                self.warn(f"could not set commit statuses: {exc.full}")

    def ensure_base(self, git: Git, base: str) -> None:
        """actions/checkout fetches one commit by default: fetch the base commit too (its tree is
        enough to diff and to read its edgegate.yml and policy), or stop with exit 2. Never gate
        with the pull request's own limits because the base commit was not there."""
        if not git.is_repo() or git.has_commit(base):
            return
        self.log(f"the base commit {base[:12]} is not in this clone (shallow checkout): fetching it")
        if not git.fetch_commit(base):
            raise ConfigError(f"the base commit {base[:12]} is not in this clone and could not be "
                              "fetched from origin", value=base, fix=MISSING_COMMIT_FIX)

    def ensure_history(self, git: Git, default_branch: str) -> None:
        """No base commit from the event (a new branch pushed, a manual run): the base is the
        merge base with the default branch, which a shallow clone lacks. Deepen until it is
        found (50, 500 commits, then the whole history)."""
        if not git.is_repo() or not git.is_shallow():
            return
        ref = f"+refs/heads/{default_branch}:refs/remotes/origin/{default_branch}"
        for depth in (50, 500, None):
            self.log(f"shallow clone: fetching {'all' if depth is None else depth} more commit(s) "
                     f"and {default_branch} to find the base commit")
            if not git.deepen(depth, refs=(ref,)):
                break
            head = git.rev("HEAD")
            if not git.is_shallow() or git.merge_base(f"origin/{default_branch}", head):
                return

    # ------------------------------------------------------------------ modes
    def run_gate_mode(self) -> int:
        from edgegate.github.pulls import changed_files

        loaded = self.load()
        pr = self.event.get("pull_request") or {}
        number = pr.get("number")
        git = self.ctx.git(self.ctx.workspace)
        base = (pr.get("base") or {}).get("sha")
        status_sha = (pr.get("head") or {}).get("sha") or self.env.get("GITHUB_SHA")
        if not pr and self.event_name == "push":
            before = self.event.get("before")
            base = before if before and before != ZERO_SHA else None
        if base:
            self.ensure_base(git, base)
        else:
            self.ensure_history(git, loaded.config.default_branch)
        source: Git = git
        if number is not None and self.github() is not None:
            try:
                changes = changed_files(self.github(), number)
                if changes is None:
                    self.log("the PR changes too many files for the API; using git diff")
                else:
                    source = PullRequestChanges(self.ctx.workspace, base, changes)
                    self.log(f"#{number} changes {len(changes)} file(s) (PR files API)")
            except GitHubError as exc:
                self.warn(f"could not list the PR's files, using git diff instead: {exc.full}")
        report = self.gate(loaded, [], base, source)
        devices = sorted(set(self.inputs.devices or loaded.config.devices) |
                         {d for m in loaded.config.models for d in (m.devices or [])})
        out = self.out_dir()
        self.report_outputs(report)
        bundle = write_bundle(out, self.ctx.workspace / self.inputs.bundle, pr_number=number,
                              head_sha=status_sha)
        self.wf.set_output("bundle", bundle)
        quick = not report.models and not report.errors and not report.policy_changes
        if quick:
            self.log("no changed model: success")
        self.wf.append_summary((out / "summary.md").read_text(encoding="utf-8"))
        self.post(report, number, status_sha, devices,
                  (out / "comment.md").read_text(encoding="utf-8"), create_comment=not quick)
        if self.inputs.publish == "true":
            self.publish(report, self.release_tag())
        return exit_for(report, self.inputs.fail_on)

    def run_comment_mode(self) -> int:
        from edgegate.github.pulls import pull_for_sha
        from edgegate.report.render import render_comment

        run = self.event.get("workflow_run") or {}
        if run and run.get("event") not in ("pull_request", "pull_request_target"):
            self.log(f"workflow_run of a '{run.get('event')}' event: nothing to comment on")
            return EXIT_OK
        head_sha = run.get("head_sha") or self.env.get("GITHUB_SHA")
        if not isinstance(head_sha, str) or not head_sha:
            raise InputError("no head SHA: neither workflow_run.head_sha nor GITHUB_SHA is set",
                             fix="run comment mode from a workflow_run event")
        bundle = read_bundle(self.ctx.workspace / self.inputs.bundle)
        if bundle.head_sha and bundle.head_sha != head_sha:
            raise InputError("the result bundle is for another commit", value=bundle.head_sha,
                             file=self.inputs.bundle,
                             fix=f"download the artifact of the run that built {head_sha}")
        gh = self.github(required=True)
        head_repo = run.get("head_repository") or {}
        number = pull_for_sha(gh, head_sha, (head_repo.get("owner") or {}).get("login"),
                              run.get("head_branch"),
                              [p["number"] for p in run.get("pull_requests") or [] if isinstance(p.get("number"), int)])
        if number is None:
            self.warn(f"no open pull request has head {head_sha}; only statuses are set")
        elif bundle.pr_number not in (None, number):
            self.warn(f"the bundle names #{bundle.pr_number}; commenting on #{number}, the PR of {head_sha[:12]}")
        report = bundle.report
        self.wf.set_output("verdict", report.verdict)
        self.wf.set_output("exit-code", report.exit_code)
        devices = sorted({r.device for m in report.models for r in m.results})
        self.wf.append_summary(f"EdgeGate result for {head_sha[:12]}"
                               + (f" posted on #{number}" if number else "") + f": **{report.verdict}**\n")
        self.post(report, number, head_sha, devices, render_comment(report))
        return EXIT_OK

    def release_tag(self) -> str:
        release = self.event.get("release") or {}
        ref = self.env.get("GITHUB_REF", "")
        tag = self.inputs.tag or release.get("tag_name") or (
            ref[len("refs/tags/"):] if ref.startswith("refs/tags/") else None)
        if not tag:
            raise ConfigError("no release tag: not a release or tag event", field="tag",
                              fix="set the 'tag' input, or run on 'release' or a tag push")
        return tag

    def publish(self, report: Report, tag: str) -> str | None:
        from edgegate.github.releases import collect_assets, publish

        if report.errors:
            self.warn("configuration errors: nothing is published")
            return None
        assets = collect_assets(report, self.out_dir(), self.out_dir() / "release")
        url = publish(self.github(required=True), tag, assets, log=self.log,
                      body=f"Per-device builds by EdgeGate {report.edgegate_version}; "
                           "checksums in SHA256SUMS, metrics and toolchain versions in manifest.json.")
        self.wf.set_output("release-url", url)
        self.log(f"published {len(assets)} asset(s) to {url}")
        return url

    def run_publish_mode(self) -> int:
        tag = self.release_tag()
        loaded = self.load()
        git = self.ctx.git(self.ctx.workspace)
        models = [str(self.ctx.workspace / p) for p in configured_models(loaded.config, git)]
        report = self.gate(loaded, models, None, git)
        self.report_outputs(report)
        self.wf.append_summary((self.out_dir() / "summary.md").read_text(encoding="utf-8"))
        if self.inputs.publish != "false":
            self.publish(report, tag)
        return exit_for(report, self.inputs.fail_on)


def run_action(ctx: ActionContext) -> int:
    """The whole Action; never raises. Exit codes: 0 passed, 1 a gate failed, 2 bad configuration
    or input, 3 internal error (fail-on may lower 1, or 1 and 2, to 0)."""
    token = ""
    try:
        run = _Run(ctx)
        token = run.inputs.token or ""
        mode = resolve_mode(run.inputs.mode, run.event_name, ctx.env)
        run.log(f"EdgeGate action: mode {mode}, event {run.event_name or '(none)'}")
        if mode == "comment":
            return run.run_comment_mode()
        if mode == "publish":
            return run.run_publish_mode()
        return run.run_gate_mode()
    except EdgeGateError as exc:
        print(Annotation("error", redact(exc.terminal, [token])).command(), file=ctx.stdout, flush=True)
        return exc.exit_code
    except Exception:  # a bug: exit 3, never 1 (which means "a gate failed")
        # the trace holds text from the pull request (paths, messages): shown, never run
        with CommandPause(ctx.progress.stream, ctx.env):
            print(log_text(redact(traceback.format_exc(), [token])), file=ctx.progress.stream,
                  flush=True)
        print("::error::EdgeGate internal error (a bug); please report it with the log above",
              file=ctx.stdout, flush=True)
        return EXIT_INTERNAL


def workspace_of(env: Mapping[str, str]) -> Path:
    return Path(env.get("GITHUB_WORKSPACE") or os.getcwd())
