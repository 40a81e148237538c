"""One EdgeGate comment per pull request, found by its hidden marker among the comments the
token's user wrote, and updated in place on every run."""

from __future__ import annotations

from dataclasses import dataclass

from edgegate.github.client import GitHubRepo
from edgegate.report.render import COMMENT_LIMIT, MARKER


@dataclass(frozen=True)
class CommentRef:
    id: int
    url: str
    created: bool


def upsert_comment(gh: GitHubRepo, number: int, body: str, *, author: str | None = None,
                   create: bool = True, marker: str = MARKER) -> CommentRef | None:
    """Update EdgeGate's comment on PR ``number``, or create it (unless create=False).

    Each attempt re-reads the comments before writing, so a retry after a write that failed
    half-way updates the comment it created instead of adding a second one."""
    if marker not in body:
        body = f"{marker}\n{body}"
    if len(body) > COMMENT_LIMIT:
        note = "\n\n… truncated to fit GitHub's comment limit.\n"
        body = body[: COMMENT_LIMIT - len(note)] + note
    login = gh.login(author)

    def attempt() -> CommentRef | None:
        issue = gh.repo.get_issue(number)
        existing = None
        for comment in issue.get_comments():
            if comment.user is not None and comment.user.login == login and marker in (comment.body or ""):
                existing = comment
                break
        if existing is not None:
            if existing.body != body:
                existing.edit(body)
            return CommentRef(existing.id, existing.html_url, created=False)
        if not create:
            return None
        made = issue.create_comment(body)
        return CommentRef(made.id, made.html_url, created=True)

    return gh.call(f"comment on #{number}", attempt)
