"""Retrying exchange calls: exponential backoff with jitter, honouring Retry-After.

Retried: ccxt's `OperationFailed` family — `NetworkError` and its subclasses
(`RateLimitExceeded` and `DDoSProtection` for 429/418, `ExchangeNotAvailable` for 5xx and
refused connections, `RequestTimeout`) and `BadResponse`. Not retried: `ExchangeError` and
subclasses (bad symbol, bad key, rejected order): repeating them cannot help.
The live feed retries without limit (the daemon must not die of a network problem);
one-shot commands give up after `attempts` with the last error.

When the exchange cannot be reached at all (no network, DNS failure, connection refused,
timeouts) `reachability` says so in **one** line ("EXCHANGE unreachable (connection refused
127.0.0.1:9) ..."), repeated only every few minutes while it lasts, and once more when it
answers again; the per-attempt retry lines are then debug-level, so an outage does not flood
the log. Rate limits and 5xx answers still log each retry.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
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


def describe_network_error(e: BaseException) -> str | None:
    """A few words for a person if `e` means "cannot reach the exchange" (else None)."""
    chain = [e, e.__cause__, e.__context__]  # ccxt wraps aiohttp's error, which says what happened
    raw = " ".join(f"{type(x).__name__}: {x}" for x in chain if x is not None)
    text = raw.lower()
    m = re.search(r"cannot connect to host (\S+) ", raw, re.I)
    where = f" {m.group(1)}" if m else ""
    if any(k in text for k in ("dnserror", "name or service not known", "nodename nor servname",
                                "temporary failure in name resolution", "no address associated")):  # fmt: skip
        return f"DNS lookup failed{where}"
    if "connection refused" in text or "connect call failed" in text:
        return f"connection refused{where}"
    if "network is unreachable" in text or "no route to host" in text:
        return f"no network{where}"
    if isinstance(e, ccxt.RequestTimeout) or "timed out" in text or "timeouterror" in text:
        return f"timed out{where}"
    if isinstance(e, ccxt.NetworkError) and not isinstance(e, ccxt.DDoSProtection | ccxt.RateLimitExceeded) and m:
        return f"{type(e).__name__}{where}"
    return None


class Reachability:
    """Is the exchange reachable? One line when it stops answering, a reminder every
    `remind_s` while it lasts, one line when it answers again."""

    def __init__(self, remind_s: float = 300.0):
        self.remind_s = remind_s
        self.down_since: float | None = None
        self._said = 0.0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, e: BaseException, url: str | None = None) -> bool:
        """Report an error; True if it means the exchange is unreachable."""
        why = describe_network_error(e)
        if why is None:
            return False
        now = time.monotonic()
        if self.down_since is None or now - self._said >= self.remind_s:
            since = "" if self.down_since is None else f" for {now - self.down_since:.0f}s"
            where = f", {url}" if url else ""
            log.warning("exchange_unreachable", reason=why, error=type(e).__name__, url=url,
                        down_s=None if self.down_since is None else round(now - self.down_since),
                        text=f"EXCHANGE unreachable{since} ({why}{where}): retrying with backoff, nothing traded meanwhile")  # fmt: skip
            self._said = now
            if self.down_since is None:
                self.down_since = now
                self.outages += 1
        return True

    def ok(self) -> None:
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            self.down_since = None
            log.info("exchange_reachable", down_s=round(down, 1), text=f"EXCHANGE reachable again after {down:.0f}s")


#: The process's one view of the exchange (the daemon talks to one exchange).
reachability = Reachability()


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
            out = await call()
        except RETRYABLE as e:
            unreachable = reachability.failed(e)
            if on_error is not None:
                on_error(e)
            if attempts is not None and n >= attempts:
                raise RetriesExhausted(what, n, e) from e
            delay = backoff.next()
            if isinstance(e, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)) and exchange is not None:
                ra = retry_after_s(exchange)
                if ra is not None:
                    delay = max(delay, min(ra, cap_s))
            (log.debug if unreachable else log.warning)(
                "exchange_retry", what=what, error=type(e).__name__, attempt=n, delay_s=round(delay, 3))
            await asyncio.sleep(delay)
            continue
        reachability.ok()
        return out
