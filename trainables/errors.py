"""The one error type users see: a one-line message naming the problem and the fix.

The CLI prints `error: <what> — <how to fix>` and exits with status 2; nothing else is caught, so real bugs
keep their tracebacks.
"""


class XstiltsError(Exception):
    """A user-facing problem (bad config, missing data, unknown task) with a one-line explanation:
    `XstiltsError(what, fix)` reads "what — fix"."""

    def __init__(self, what: str, fix: str | None = None):
        super().__init__(f"{what} — {fix}" if fix else what)
