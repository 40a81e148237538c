"""Pull requests: the files a PR changes (the PR files API) and the PR a trusted head SHA belongs to."""

from __future__ import annotations

from edgegate.discover.git import Change
from edgegate.github.client import GitHubRepo

# GitHub lists at most 3000 files per pull request; beyond that the caller falls back to git diff.
MAX_PR_FILES = 3000
_STATUS = {"added": "added", "removed": "deleted", "modified": "modified", "renamed": "renamed",
           "copied": "added", "changed": "modified"}


def changed_files(gh: GitHubRepo, number: int) -> list[Change] | None:
    """The PR's changes as git would report them, or None when GitHub cannot list them all."""
    def fetch():
        pull = gh.repo.get_pull(number)
        if (pull.changed_files or 0) >= MAX_PR_FILES:
            return None
        out: list[Change] = []
        for f in pull.get_files():
            status = _STATUS.get(f.status)
            if status is None:            # "unchanged": nothing to gate
                continue
            old = f.previous_filename if status == "renamed" else None
            out.append(Change(status, f.filename, old))
        return out

    return gh.call(f"list the files of #{number}", fetch)


def pull_for_sha(gh: GitHubRepo, head_sha: str, head_owner: str | None = None,
                 head_branch: str | None = None, hinted: list[int] | None = None) -> int | None:
    """The open PR whose head is ``head_sha`` (a trusted SHA, e.g. workflow_run.head_sha).

    Numbers in ``hinted`` (from the event) are checked first; then the open PRs from
    ``head_owner:head_branch``; then every open PR. A PR counts only if its head SHA matches."""
    def find():
        for number in hinted or []:
            pull = gh.repo.get_pull(number)
            if pull.head.sha == head_sha and pull.state == "open":
                return number
        if head_owner and head_branch:
            for pull in gh.repo.get_pulls(state="open", head=f"{head_owner}:{head_branch}"):
                if pull.head.sha == head_sha:
                    return pull.number
        for pull in gh.repo.get_pulls(state="open", sort="updated", direction="desc"):
            if pull.head.sha == head_sha:
                return pull.number
        return None

    return gh.call(f"find the pull request of {head_sha[:12]}", find)
