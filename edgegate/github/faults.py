"""Retries with backoff on GitHub's 5xx and rate limits, and GitHub errors turned into EdgeGate
errors that say what to do. Secrets are redacted from every message this module produces."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

from edgegate.errors import GitHubError

T = TypeVar("T")

FORK_FIX = (
    "the token of this workflow may not write here. Pull requests from forks get a read-only "
    "GITHUB_TOKEN, so the pull_request job cannot comment or set statuses. Use the two-workflow "
    "pattern: the pull_request job runs EdgeGate and uploads its result bundle (output 'bundle') "
    "with actions/upload-artifact; a second workflow on 'workflow_run' (permissions: "
    "pull-requests: write, statuses: write) downloads it and runs this action with "
    "'mode: comment' (see examples/workflows/ in the EdgeGate repository). For pull requests "
    "from the same repository, grant 'permissions: pull-requests: write' and 'statuses: write' "
    "(and 'contents: write' to publish release assets)")


@dataclass
class RetryPolicy:
    """attempts in all (first try included); delays double from base_delay_s up to max_delay_s;
    a Retry-After or rate-limit reset header wins when present (capped at max_wait_s)."""

    attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_wait_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time
    log: Callable[[str], None] = lambda message: None
    secrets: list[str] = field(default_factory=list)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _headers(exc) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (getattr(exc, "headers", None) or {}).items()}


def _message(exc) -> str:
    data = getattr(exc, "data", None)
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])
    return str(getattr(exc, "message", None) or data or exc)


def retry_delay(exc, attempt: int, policy: RetryPolicy) -> float | None:
    """Seconds to wait before the next attempt, or None when this error is not worth retrying."""
    status = getattr(exc, "status", None)
    headers = _headers(exc)
    backoff = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    if status is None:                       # connection reset, timeout: transient
        return backoff
    retry_after = headers.get("retry-after")
    rate_limited = status == 429 or (status == 403 and (
        retry_after is not None or headers.get("x-ratelimit-remaining") == "0"
        or "rate limit" in _message(exc).lower()))
    if rate_limited:
        if retry_after is not None:
            try:
                return min(policy.max_wait_s, max(0.0, float(retry_after)))
            except ValueError:
                return backoff
        reset = headers.get("x-ratelimit-reset")
        if reset and headers.get("x-ratelimit-remaining") == "0":
            try:
                return min(policy.max_wait_s, max(0.0, float(reset) - policy.now()) + 1.0)
            except ValueError:
                return backoff
        return max(backoff, 60.0 if status == 403 else backoff)   # secondary limit: wait a minute
    if status >= 500:
        return backoff
    return None


def translate(exc, what: str, secrets: Iterable[str] = ()) -> GitHubError:
    """A GitHub exception as a GitHubError with the status, GitHub's message and a fix."""
    status = getattr(exc, "status", None)
    message = redact(_message(exc), secrets)
    if status is None:
        return GitHubError(f"{what}: cannot reach GitHub ({redact(str(exc), secrets)[:300]})",
                           fix="check GITHUB_API_URL and the network; the request was retried")
    text = f"{what}: GitHub answered {status} {message[:300]}"
    if status == 403 and "not accessible by integration" in message.lower():
        return GitHubError(text, fix=FORK_FIX)
    if status == 401:
        return GitHubError(text, fix="the token is missing, expired or wrong: pass "
                                     "'github-token: ${{ secrets.GITHUB_TOKEN }}' (the default)")
    if status == 404:
        return GitHubError(text, fix="check the repository name and that the token can read it")
    if status == 403 or status == 429:
        return GitHubError(text, fix="GitHub's rate limit held after retries; re-run the job later")
    if status == 422:
        return GitHubError(text, fix="GitHub rejected the request's content (see its message)")
    return GitHubError(text, fix="GitHub failed after retries; re-run the job (report.json is kept)")


def with_retries(policy: RetryPolicy, what: str, fn: Callable[[], T]) -> T:
    """Run fn, retrying on 5xx, rate limits and dropped connections. fn must be idempotent: every
    caller here re-reads GitHub's state before it writes, so a retried write never duplicates."""
    from github import GithubException
    from requests import exceptions as rex

    transient = (rex.ConnectionError, rex.Timeout, ConnectionError, TimeoutError)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except GithubException as exc:
            delay = retry_delay(exc, attempt, policy)
            if delay is None or attempt >= policy.attempts:
                raise translate(exc, what, policy.secrets) from None
            policy.log(f"{what}: GitHub answered {exc.status}; retry {attempt}/{policy.attempts - 1} "
                       f"in {delay:.1f}s")
        except transient as exc:
            delay = retry_delay(exc, attempt, policy) or policy.base_delay_s
            if attempt >= policy.attempts:
                raise translate(exc, what, policy.secrets) from None
            policy.log(f"{what}: {type(exc).__name__}; retry {attempt}/{policy.attempts - 1} "
                       f"in {delay:.1f}s")
        policy.sleep(delay)
