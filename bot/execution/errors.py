"""What an exchange error on a new order means for the broker.

Three kinds, each with a reason code (the code reaches the decisions table when an entry is
dropped):
- `RETRY`: the exchange refused the request before looking at it (429 rate limit, 418 IP ban):
  nothing was placed; send the same client order id again after a backoff.
- `REJECT`: the exchange looked at the order and refused it (insufficient balance, min notional,
  lot size, price filters, unknown symbol): nothing was placed, sending it again gives the same
  answer; the order is dropped with its reason.
- `UNKNOWN`: the answer never arrived or says nothing (timeout, connection reset, 5xx, anything
  unrecognised): the order may or may not be on the exchange; it is looked up by its client
  order id, never sent again blindly.
"""

from __future__ import annotations

from enum import Enum

import ccxt


class Kind(Enum):
    RETRY = "retry"
    REJECT = "reject"
    UNKNOWN = "unknown"


_REJECT_CODES = (
    ("insufficient balance", "rejected_insufficient_balance"),
    ("MIN_NOTIONAL", "rejected_min_notional"),
    ("NOTIONAL", "rejected_min_notional"),
    ("LOT_SIZE", "rejected_lot_size"),
    ("MARKET_LOT_SIZE", "rejected_lot_size"),
    ("PRICE_FILTER", "rejected_price_filter"),
    ("PERCENT_PRICE", "rejected_price_filter"),
    ("Market is closed", "rejected_market_closed"),
    ("Invalid symbol", "rejected_invalid_symbol"),
)


def classify(e: BaseException) -> tuple[Kind, str]:
    """(kind, reason code) of an exception raised by `create_order`."""
    text = str(e)
    if isinstance(e, ccxt.RateLimitExceeded | ccxt.DDoSProtection) or " 418 " in text or " 429 " in text:
        return Kind.RETRY, "rate_limited"
    if isinstance(e, ccxt.InvalidOrder) and "Duplicate order" in text:
        return Kind.UNKNOWN, "duplicate_client_order_id"  # it is there: look it up
    if isinstance(e, ccxt.InsufficientFunds):
        return Kind.REJECT, "rejected_insufficient_balance"
    for needle, code in _REJECT_CODES:
        if needle in text:
            return Kind.REJECT, code
    if isinstance(e, ccxt.InvalidOrder | ccxt.BadSymbol | ccxt.BadRequest | ccxt.AuthenticationError | ccxt.PermissionDenied):
        return Kind.REJECT, "rejected_" + type(e).__name__.lower()
    return Kind.UNKNOWN, "no_answer_" + type(e).__name__.lower()
