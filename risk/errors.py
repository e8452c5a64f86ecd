"""Exception types of the risk package. Messages say what was wrong and what to do about it."""

from __future__ import annotations


class RiskError(Exception):
    """Base class of every error raised by `risk`."""


class RiskInputError(RiskError, ValueError):
    """The caller passed inputs that cannot be sized (shape mismatch, unknown symbol, bad equity).

    These are programming errors in the caller, not market conditions: bad market values of one
    candidate (NaN price, zero SL) are not raised but skipped with reason `invalid_input`.
    """


class RiskStateError(RiskError, ValueError):
    """Persisted risk state that cannot be restored, or a clock that went backwards."""
