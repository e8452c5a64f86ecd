"""The broker interface the engine talks to, and the paper broker.

A broker takes order intents (`submit`) and reports what happened to them (`poll`): fills and
cancellations. The engine calls `poll` at the start of every step with the minute's bars, so a
simulated broker can fill against them; a live broker (ccxt, another issue) returns whatever
executions arrived since the last poll and ignores the bars.

Paper semantics (the trainer's simulation and the label, priced only through `models.trading.costs`):
- an entry (market order) decided after the close of minute t fills at the **open of minute
  t+1** at `Costs.buy_fill(open)` plus `Costs.fee`; if the symbol has no candle in minute t+1
  (an outage, a missing bar) the order is cancelled with reason `no_next_bar`, exactly when the
  label has no trade;
- an exit is a resting order at the barrier the exit rule found touched in the current bar
  (TP / SL level, the open when gapped through, the close on a time-out): `limit_price` carries
  it and it fills in the same step at `Costs.sell_fill(limit_price)` minus `Costs.fee`.
`Fill.ref_price` is the price before slippage, so `ret` of a trade is `Costs.net_return` of its
reference prices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bot.engine.records import Fill, OrderIntent
from models.timeutil import MINUTE_MS


@dataclass(slots=True)
class BrokerUpdate:
    """What happened to submitted orders since the last poll."""

    fills: list[Fill] = field(default_factory=list)
    cancelled: list[tuple[str, str]] = field(default_factory=list)  # (client_order_id, reason)
    # orders of ours this engine never decided (a live broker after a crash: sent by the process
    # that died before it persisted the decision), with the decision's meta when it is known:
    # from now on the engine waits for them as for its own (their fills come as `fills`)
    adopted: list[tuple[OrderIntent, dict | None]] = field(default_factory=list)


class Broker(Protocol):
    """What the engine needs from a broker (paper here; live ccxt later)."""

    def submit(self, intents: Sequence[OrderIntent]) -> None:
        """Accept orders; a client_order_id seen before is ignored (idempotent)."""
        ...

    def poll(self, ts_ms: int, bars: np.ndarray, index: Mapping[str, int]) -> BrokerUpdate:
        """Fills and cancellations since the last poll. `bars` (S x OHLCV) is the minute opening at
        `ts_ms`, rows in `index` order (a simulated broker fills against it)."""
        ...

    def pending(self) -> list[OrderIntent]:
        """Orders submitted and not yet filled or cancelled."""
        ...


# Order ids the paper broker remembers to refuse a second submit of the same id. An id names
# (bundle version, symbol, decision minute, leg) and the engine submits each once; the guard is
# for a replayed step, which is never more than a few orders back. Unbounded, the set grew with
# every order for the life of the daemon (found by the week-long reliability run).
SEEN_KEEP = 10_000


class PaperBroker:
    """Simulated fills through `models.trading.costs.Costs` (see the module docstring)."""

    def __init__(self, costs: object):
        self.costs = costs
        self._pending: dict[str, OrderIntent] = {}
        self._ready: list[Fill] = []
        self._seen: dict[str, None] = {}  # ids accepted, oldest first, at most SEEN_KEEP (see submit)
        self._n = 0

    def submit(self, intents: Sequence[OrderIntent]) -> None:
        for it in intents:
            if it.client_order_id in self._seen:
                continue
            self._seen[it.client_order_id] = None
            if len(self._seen) > SEEN_KEEP:  # a daemon runs for months: forget the oldest ids
                del self._seen[next(iter(self._seen))]
            if it.limit_price is not None:  # an exit resting at its barrier: fills in this bar
                self._ready.append(self._fill(it, float(it.limit_price), it.decision_ts))
            else:
                self._pending[it.client_order_id] = it

    def poll(self, ts_ms: int, bars: np.ndarray, index: Mapping[str, int]) -> BrokerUpdate:
        up = BrokerUpdate(self._ready, [])
        self._ready = []
        if self._pending:
            for cid, it in list(self._pending.items()):
                row = index.get(it.symbol)
                o = float(bars[row, 0]) if row is not None else float("nan")
                del self._pending[cid]
                if ts_ms != it.decision_ts + MINUTE_MS or not (o == o and bars[row, 3] == bars[row, 3]):
                    up.cancelled.append((cid, "no_next_bar"))
                    continue
                up.fills.append(self._fill(it, o, ts_ms))
        return up

    def flush(self) -> BrokerUpdate:
        """The exits that filled at their barrier since the last poll (entries wait for a bar)."""
        up = BrokerUpdate(self._ready, [])
        self._ready = []
        return up

    def pending(self) -> list[OrderIntent]:
        return list(self._pending.values())

    def cancel_entries(self, symbols: set[str]) -> list[str]:
        """Drop the entries of `symbols` still waiting for the next open (the operator's flatten
        between two minutes); returns their ids."""
        out = [cid for cid, it in self._pending.items() if it.symbol in symbols]
        for cid in out:
            del self._pending[cid]
        return out

    def restore(self, pending: Sequence[OrderIntent], seen: Sequence[str] = ()) -> None:
        """Resume after a restart with the orders that were still pending."""
        self._pending = {it.client_order_id: it for it in pending}
        self._seen = dict.fromkeys([*seen, *self._pending][-SEEN_KEEP:])

    def _fill(self, it: OrderIntent, ref: float, ts: int) -> Fill:
        c = self.costs
        price = float(c.buy_fill(ref)) if it.side == "buy" else float(c.sell_fill(ref))
        fee = float(c.fee(it.qty * price))
        self._n += 1
        return Fill(it.client_order_id, f"paper-{it.client_order_id}", it.symbol, it.side, it.qty, price, fee, int(ts),
                    ref_price=ref)  # fmt: skip
