"""Exceptions of the feature engine, each naming what to change to fix it."""

from __future__ import annotations


class FeatureError(Exception):
    """Base class of every error raised by `models.features`."""


class MissingReferenceError(FeatureError, KeyError):
    """A reference symbol (features.reference_symbols) has no candles / is not in the symbol list."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "missing reference symbol"


class BarOrderError(FeatureError, ValueError):
    """Bars were given out of order, twice for one minute, or off the minute grid."""


class RegimeModelError(FeatureError, ValueError):
    """A regime model cannot be fitted, loaded or used as given."""


class ExternalDataError(FeatureError, ValueError):
    """The external daily series file is missing, malformed or does not match the config."""
