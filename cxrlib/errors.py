"""Errors meant for people: one line that names the file (when there is one) and the reason."""

from __future__ import annotations


class CxrError(ValueError):
    """Any error cxrlib reports to a user; the CLI prints ``error: <message>`` and exits with status 2."""


class ImageReadError(CxrError):
    """A file that cannot be read as an image: ``cannot read '<path>': <reason>``."""

    def __init__(self, path, reason: str, hint: str | None = "skip it with on_error='skip'"):
        self.path = str(path)
        self.reason = reason
        msg = f"cannot read '{self.path}': {reason}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
