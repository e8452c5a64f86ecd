"""Candle bulk I/O over Postgres's binary COPY protocol, vectorised with numpy.

Writes: one symbol's rows are encoded as a binary COPY stream by a numpy structured array (no
Python object per row). New ranges are COPYed straight into `candles`; ranges that overlap
stored rows are copied into a per-connection temp staging table, then upserted into `candles`
in the same transaction. The upsert only touches rows whose values differ, so
re-importing the same data writes 0 rows; a repaired candle overwrites its old value.

Reads: `COPY (SELECT ...) TO STDOUT (FORMAT binary)` makes the server stream the rows; chunks
are decoded with `np.frombuffer` as they arrive and handed out in batches through a small
queue, so memory stays bounded by the batch size whatever the range (the seed's `fetchall()`
problem), and there is still no per-row Python object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import numpy as np

from models.candles import FIELDS, Candles

_PG_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = _PG_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags, header extension
_TRAILER = b"\xff\xff"

# One binary COPY tuple: a field count, then for each field its byte length and big-endian
# value. Every column is NOT NULL and fixed-width for a given symbol (the symbol text has the
# same length on every row), so a whole payload is one numpy structured array.
_VALUE_FIELDS = [x for f in FIELDS for x in ((f"{f}_len", ">i4"), (f, ">f8"))]
_ROW = np.dtype([("n", ">i2"), ("ts_len", ">i4"), ("ts", ">i8"), *_VALUE_FIELDS])  # read/stage layout
_ROW_SIZE = _ROW.itemsize  # 74 bytes
_COLUMNS = ["symbol", "ts", *FIELDS]

_STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS candles_stage (
    ts bigint NOT NULL, open float8 NOT NULL, high float8 NOT NULL, low float8 NOT NULL,
    close float8 NOT NULL, volume float8 NOT NULL
) ON COMMIT DELETE ROWS
"""

_UPSERT = """
WITH w AS (
    INSERT INTO candles AS c (symbol, ts, open, high, low, close, volume)
    SELECT $1, ts, open, high, low, close, volume FROM candles_stage
    ON CONFLICT (symbol, ts) DO UPDATE
       SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
           close = EXCLUDED.close, volume = EXCLUDED.volume
     WHERE (c.open, c.high, c.low, c.close, c.volume)
           IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated FROM w
"""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one bulk write: new rows, rows whose values changed, rows already identical."""

    inserted: int
    updated: int
    unchanged: int

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    def __add__(self, other: WriteResult) -> WriteResult:
        return WriteResult(self.inserted + other.inserted, self.updated + other.updated, self.unchanged + other.unchanged)


def encode_copy_binary(c: Candles, symbol: str | None = None) -> bytes:
    """Encode candles as a complete binary COPY payload (header, tuples, trailer).

    Without `symbol` the tuples are (ts, open, high, low, close, volume) for the staging table;
    with it they are (symbol, ts, ...) for a direct COPY into `candles`.
    """
    head: list[tuple[str, str]] = [("n", ">i2")]
    if symbol is not None:
        sym = symbol.encode()
        head += [("sym_len", ">i4"), ("sym", f"S{len(sym)}")]
    dtype = np.dtype([*head, ("ts_len", ">i4"), ("ts", ">i8"), *_VALUE_FIELDS])
    rows = np.empty(len(c), dtype=dtype)
    rows["n"] = 6 if symbol is None else 7
    if symbol is not None:
        rows["sym_len"] = len(sym)
        rows["sym"] = sym
    rows["ts_len"] = 8
    rows["ts"] = c.ts
    for f in FIELDS:
        rows[f"{f}_len"] = 8
        rows[f] = getattr(c, f)
    return _HEADER + rows.tobytes() + _TRAILER


def dedupe_sorted(c: Candles) -> Candles:
    """Sort by ts and keep the last row of each ts (the latest word from the exchange wins)."""
    if len(c) == 0:
        return c
    order = np.argsort(c.ts, kind="stable")
    ts = c.ts[order]
    keep = np.ones(len(ts), dtype=bool)
    keep[:-1] = ts[1:] != ts[:-1]
    idx = order[keep]
    if len(idx) == len(c) and np.all(order == np.arange(len(c))):
        return c
    return Candles(*(col[idx] for col in c.columns()))


async def write_candles(conn: asyncpg.Connection, symbol: str, candles: Candles) -> WriteResult:
    """Upsert one symbol's candles in one transaction. Idempotent; see module docstring.

    Fast path: when no stored row of this symbol falls inside the batch's time range (a first
    import, or the live feed appending), the rows are COPYed straight into `candles`. Otherwise
    (or if a concurrent writer got there first) they go through the staging upsert.
    """
    c = dedupe_sorted(candles)
    if len(c) == 0:
        return WriteResult(0, 0, 0)
    overlap = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM candles WHERE symbol = $1 AND ts BETWEEN $2 AND $3)",
        symbol, int(c.ts[0]), int(c.ts[-1]),
    )  # fmt: skip
    if not overlap:
        try:
            async with conn.transaction():
                await conn.copy_to_table(
                    "candles", source=_BytesSource(encode_copy_binary(c, symbol)), format="binary", columns=_COLUMNS
                )
            return WriteResult(len(c), 0, 0)
        except asyncpg.UniqueViolationError:
            pass  # a concurrent writer inserted some of these rows: fall through to the upsert
    payload = encode_copy_binary(c)
    async with conn.transaction():
        await conn.execute(_STAGE_DDL)
        await conn.copy_to_table("candles_stage", source=_BytesSource(payload), format="binary")
        row = await conn.fetchrow(_UPSERT, symbol)
    inserted, updated = int(row["inserted"]), int(row["updated"])
    return WriteResult(inserted, updated, len(c) - inserted - updated)


class _BytesSource:
    """An async byte-chunk iterator for asyncpg's copy_to_table (1 MiB chunks)."""

    def __init__(self, payload: bytes, chunk: int = 1 << 20):
        self._view = memoryview(payload)
        self._chunk = chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._view), self._chunk):
            yield bytes(self._view[i : i + self._chunk])


def _decode(rows: np.ndarray, dtype: np.dtype | type) -> Candles:
    return Candles(rows["ts"].astype(np.int64), *(rows[f].astype(dtype) for f in FIELDS))


async def stream_candles(
    conn: asyncpg.Connection,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    batch_rows: int = 50_000,
    dtype: np.dtype | type = np.float32,
) -> AsyncIterator[Candles]:
    """Yield one symbol's candles with start_ms <= ts < end_ms, ascending, in batches.

    The server streams the rows (binary COPY); at most about two batches are held in memory.
    Prices are float32 by default (the feature and training paths' dtype); pass
    `dtype=np.float64` for exact values. The connection is busy until the iterator ends.
    """
    query = "SELECT ts, open, high, low, close, volume FROM candles WHERE symbol = $1"
    args: list[object] = [symbol]
    if start_ms is not None:
        args.append(int(start_ms))
        query += f" AND ts >= ${len(args)}"
    if end_ms is not None:
        args.append(int(end_ms))
        query += f" AND ts < ${len(args)}"
    query += " ORDER BY ts"

    queue: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue(maxsize=2)
    state = {"buf": bytearray(), "header": False, "pending": []}

    async def sink(chunk: bytes) -> None:
        buf: bytearray = state["buf"]
        buf += chunk
        if not state["header"]:
            if len(buf) < len(_HEADER):
                return
            if bytes(buf[: len(_PG_SIGNATURE)]) != _PG_SIGNATURE:
                raise RuntimeError("unexpected COPY header from the server")
            del buf[: len(_HEADER)]
            state["header"] = True
        n = len(buf) // _ROW_SIZE
        if n:
            rows = np.frombuffer(bytes(buf[: n * _ROW_SIZE]), dtype=_ROW)
            del buf[: n * _ROW_SIZE]
            state["pending"].append(rows)
            if sum(len(r) for r in state["pending"]) >= batch_rows:
                await queue.put(np.concatenate(state["pending"]))
                state["pending"] = []

    async def produce() -> None:
        try:
            await conn.copy_from_query(query, *args, output=sink, format="binary")
            if state["pending"]:
                await queue.put(np.concatenate(state["pending"]))
            if bytes(state["buf"]) not in (b"", _TRAILER):
                raise RuntimeError(f"COPY stream ended with {len(state['buf'])} undecoded bytes")
            await queue.put(None)
        except BaseException as e:  # hand the failure to the consumer
            await queue.put(e)

    task = asyncio.create_task(produce())
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield _decode(item, dtype)
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


async def read_candles(
    conn: asyncpg.Connection,
    symbol: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    dtype: np.dtype | type = np.float32,
) -> Candles:
    """All of one symbol's candles in [start_ms, end_ms) as one `Candles` (streamed, then joined)."""
    parts = [b async for b in stream_candles(conn, symbol, start_ms, end_ms, dtype=dtype)]
    return Candles.concat(parts) if parts else Candles.empty(dtype)
