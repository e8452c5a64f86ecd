"""Retrying exchange calls: exponential backoff with jitter, honouring Retry-After.

Retried: ccxt's `OperationFailed` family — `NetworkError` and its subclasses
(`RateLimitExceeded` and `DDoSProtection` for 429/418, `ExchangeNotAvailable` for 5xx and
refused connections, `RequestTimeout`) and `BadResponse`. Not retried: `ExchangeError` and
subclasses (bad symbol, bad key, rejected order): repeating them cannot help.
The live feed retries without limit (the daemon must not die of a network problem);
one-shot commands give up after `attempts` with the last error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import ccxt
import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")

RETRYABLE: tuple[type[BaseException], ...] = (ccxt.OperationFailed,)


@dataclass
class Backoff:
    """Delays base, 2*base, 4*base ... capped at `cap`, each scaled by a random factor in
    [0.5, 1] ("equal jitter") so that many clients do not retry in lockstep."""

    base: float
    cap: float
    attempt: int = 0
    rng: random.Random | None = None

    def next(self) -> float:
        d = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        r = (self.rng or random).uniform(0.5, 1.0)
        return d * r

    def reset(self) -> None:
        self.attempt = 0


class RetriesExhausted(Exception):
    """A call kept failing with retryable errors; `last` is the final error."""

    def __init__(self, what: str, attempts: int, last: BaseException):
        self.last = last
        super().__init__(f"{what}: gave up after {attempts} attempts; last error {type(last).__name__}: {last}")


def retry_after_s(exchange: Any) -> float | None:
    """The Retry-After header (seconds) of the exchange's last response, if any."""
    headers = getattr(exchange, "last_response_headers", None) or {}
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return float(v)
            except (TypeError, ValueError):
                return None
    return None


async def with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    base_s: float,
    cap_s: float,
    attempts: int | None = None,
    exchange: Any = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> T:
    """Await `call()` until it succeeds; retry retryable errors with backoff (forever if
    `attempts` is None). Non-retryable errors propagate at once."""
    backoff = Backoff(base_s, cap_s)
    n = 0
    while True:
        n += 1
        try:
            return await call()
        except RETRYABLE as e:
            if on_error is not None:
                on_error(e)
            if attempts is not None and n >= attempts:
                raise RetriesExhausted(what, n, e) from e
            delay = backoff.next()
            if isinstance(e, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)) and exchange is not None:
                ra = retry_after_s(exchange)
                if ra is not None:
                    delay = max(delay, min(ra, cap_s))
            log.warning("exchange_retry", what=what, error=type(e).__name__, attempt=n, delay_s=round(delay, 3))
            await asyncio.sleep(delay)
