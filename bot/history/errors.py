"""The one exception of the history import: a file (or a symbol's files) refused, with why."""

from __future__ import annotations


class Refused(ValueError):
    """This file cannot be imported; the message is the reason, one line, for a person."""
