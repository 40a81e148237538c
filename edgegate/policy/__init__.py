"""The gate: check(result, device) -> the same result with checks, violations and a status."""

from edgegate.policy.check import check_result, check_report, exit_code_for, verdict_of

__all__ = ["check_result", "check_report", "exit_code_for", "verdict_of"]
