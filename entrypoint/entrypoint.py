#!/usr/bin/env python3
"""The Action container's entry point: build the real side effects from the Actions environment
(GitHub client, git, clock, workspace), hand them to edgegate.action, exit with its code.

The runner starts the container with the workspace mounted at /github/workspace (the working
directory), the event at $GITHUB_EVENT_PATH and inputs as INPUT_<NAME> variables.
"""

from __future__ import annotations

import os
import subprocess
import sys


def _float_env(env, name: str, default: float | None) -> float | None:
    try:
        return float(env[name]) if env.get(name) else default
    except ValueError:
        return default


def main() -> int:
    from edgegate.action import ActionContext, run_action, workspace_of
    from edgegate.discover.git import Git
    from edgegate.github.client import connect
    from edgegate.github.faults import RetryPolicy
    from edgegate.progress import make_progress
    from edgegate.trust.repo_code import watch_interrupts
    from edgegate.gate.run import _now

    watch_interrupts()      # a real Ctrl-C/cancel stops; a KeyboardInterrupt raised by PR code is its model's error

    env = dict(os.environ)
    workspace = workspace_of(env)
    # the workspace belongs to the runner's user, not the container's: tell git it is safe
    subprocess.run(["git", "config", "--global", "--add", "safe.directory", str(workspace)],
                   check=False, capture_output=True)
    progress = make_progress(False)

    def connect_real(token: str, repository: str):
        retry = RetryPolicy(base_delay_s=_float_env(env, "EDGEGATE_GITHUB_RETRY_BASE_S", 1.0),
                            log=progress.warn)
        return connect(token, repository, env.get("GITHUB_API_URL"), retry=retry,
                       throttle_s=_float_env(env, "EDGEGATE_GITHUB_THROTTLE_S", None))

    os.chdir(workspace)
    ctx = ActionContext(env=env, workspace=workspace, connect=connect_real, git=Git, clock=_now,
                        stdout=sys.stdout, progress=progress)
    return run_action(ctx)


if __name__ == "__main__":
    sys.exit(main())
