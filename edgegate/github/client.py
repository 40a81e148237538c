"""A connection to GitHub's REST API: PyGithub pointed at GITHUB_API_URL, with EdgeGate's retry
policy (PyGithub's own retries are off so that one policy, which the tests exercise, applies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from edgegate._deps import require
from edgegate.errors import ConfigError
from edgegate.github.faults import RetryPolicy, with_retries

T = TypeVar("T")

DEFAULT_API_URL = "https://api.github.com"
ACTIONS_BOT = "github-actions[bot]"


@dataclass
class GitHubRepo:
    """One repository through one token; every call goes through ``call`` (retries, errors)."""

    gh: Any             # github.Github
    repo: Any           # github.Repository.Repository (lazy: no request until used)
    full_name: str
    retry: RetryPolicy
    _login: str | None = None

    def call(self, what: str, fn: Callable[[], T]) -> T:
        return with_retries(self.retry, what, fn)

    def login(self, override: str | None = None) -> str:
        """The login of the token's user. GITHUB_TOKEN and other installation tokens may not read
        /user (403); their comments are written by github-actions[bot] unless told otherwise."""
        if override:
            return override
        if self._login is None:
            from github import GithubException

            from edgegate.github.faults import retry_delay

            def fetch() -> str:
                try:
                    return self.gh.get_user().login
                except GithubException as exc:
                    if exc.status == 403 and retry_delay(exc, 1, self.retry) is None:
                        return ACTIONS_BOT
                    raise

            self._login = self.call("read the token's user", fetch)
        return self._login


def connect(token: str, repository: str, api_url: str | None = None,
            retry: RetryPolicy | None = None, throttle_s: float | None = None,
            timeout_s: int = 60) -> GitHubRepo:
    github = require("github", extra="github")
    if not token:
        raise ConfigError("no GitHub token", field="github-token",
                          fix="pass 'github-token: ${{ secrets.GITHUB_TOKEN }}' (the default)")
    if repository.count("/") != 1:
        raise ConfigError("GITHUB_REPOSITORY must be owner/name", value=repository,
                          fix="run inside GitHub Actions or set GITHUB_REPOSITORY")
    retry = retry or RetryPolicy()
    retry.secrets = list({*retry.secrets, token})
    kwargs: dict[str, float] = {}
    if throttle_s is not None:
        kwargs.update(seconds_between_requests=throttle_s, seconds_between_writes=throttle_s)
    gh = github.Github(auth=github.Auth.Token(token), base_url=(api_url or DEFAULT_API_URL).rstrip("/"),
                       retry=None, per_page=100, timeout=timeout_s, lazy=True, **kwargs)
    repo = gh.get_repo(repository, lazy=True)
    return GitHubRepo(gh=gh, repo=repo, full_name=repository, retry=retry)
