"""Untrusted input from a PR: workspace paths, zip archives, log text, repository code references, the capped child process."""
