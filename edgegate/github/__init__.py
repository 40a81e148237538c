"""GitHub: the Actions environment (inputs, outputs, summary, annotations) and the REST API through
PyGithub (PR comments, commit statuses, changed files, releases), with retries and clear errors.

PyGithub is imported only where the API is used (the `github` extra); the Actions environment
helpers need nothing beyond the standard library.
"""
