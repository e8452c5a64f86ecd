"""A small reader for Arrow IPC files (Feather v2, what freqtrade's `.feather` candles are).

Why our own: pyarrow, the usual reader, is imported by every `import pandas` once it is
installed, and LightGBM/CatBoost import pandas, so installing it would load pyarrow into the
daemon too (measured: +64 MB RSS on the daemon's imports, 206 -> 270 MB). Candle files need
very little of the format: flat columns of fixed-width numbers and timestamps, no nulls, no
dictionaries, in one or more record batches, uncompressed or LZ4-frame compressed (freqtrade
writes `to_feather(compression="lz4")`). Everything else is refused with a line that says what.

The layout (https://arrow.apache.org/docs/format/Columnar.html, "IPC File Format"):
`ARROW1\\0\\0`, the stream's messages, a flatbuffer `Footer` (schema + the record batches'
blocks), its int32 length, `ARROW1`. Each record batch block points at a message: an optional
0xFFFFFFFF continuation, an int32 metadata length, a flatbuffer `Message` (a `RecordBatch`:
row count, one node and two buffers, validity and values, per column; optional
`BodyCompression`), then the body the buffers point into. A compressed buffer is an int64
uncompressed length (-1: stored as is) followed by one LZ4 frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"ARROW1"

# Type union tags (Schema.fbs `union Type`) and the ones a candle column may have.
_INT, _FLOAT, _TIMESTAMP = 2, 3, 10
_TYPE_NAMES = {1: "null", 4: "binary", 5: "utf8", 6: "bool", 7: "decimal", 8: "date", 9: "time", 11: "interval",
               12: "list", 13: "struct", 14: "union", 15: "fixed_size_binary", 16: "fixed_size_list", 17: "map",
               18: "duration", 19: "large_binary", 20: "large_utf8", 21: "large_list"}  # fmt: skip
_FLOAT_DTYPES = {1: "<f4", 2: "<f8"}  # Precision: HALF=0 (refused), SINGLE=1, DOUBLE=2
TIME_UNITS = ("s", "ms", "us", "ns")  # TimeUnit: SECOND=0 ... NANOSECOND=3
_RECORD_BATCH = 3  # MessageHeader union tag
_LZ4_FRAME, _ZSTD = 0, 1


class ArrowFormatError(ValueError):
    """The bytes are not an Arrow IPC file this reader can read; the message says why."""


class _Table:
    """One flatbuffer table: fields by index through its vtable (little-endian throughout)."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        self.vt = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]

    def _field(self, i: int) -> int:
        at = 4 + 2 * i
        if at >= self.vt_len:
            return 0
        off = struct.unpack_from("<H", self.buf, self.vt + at)[0]
        return self.pos + off if off else 0

    def scalar(self, i: int, fmt: str, default: int | float | bool) -> int | float | bool:
        p = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p else default

    def _deref(self, i: int) -> int:
        p = self._field(i)
        return p + struct.unpack_from("<I", self.buf, p)[0] if p else 0

    def table(self, i: int) -> _Table | None:
        p = self._deref(i)
        return _Table(self.buf, p) if p else None

    def string(self, i: int) -> str | None:
        p = self._deref(i)
        if not p:
            return None
        n = struct.unpack_from("<I", self.buf, p)[0]
        return self.buf[p + 4 : p + 4 + n].decode("utf-8", "replace")

    def tables(self, i: int) -> list[_Table]:
        p = self._deref(i)
        if not p:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        out = []
        for k in range(n):
            e = p + 4 + 4 * k
            out.append(_Table(self.buf, e + struct.unpack_from("<I", self.buf, e)[0]))
        return out

    def structs(self, i: int, fmt: str) -> list[tuple]:
        p = self._deref(i)
        if not p:
            return []
        n = struct.unpack_from("<I", self.buf, p)[0]
        size = struct.calcsize("<" + fmt)
        return [struct.unpack_from("<" + fmt, self.buf, p + 4 + k * size) for k in range(n)]


def _root(buf: bytes) -> _Table:
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


@dataclass(frozen=True)
class Column:
    """A column's name and what its values are: `kind` "int", "float" or "timestamp"."""

    name: str
    kind: str
    dtype: str  # numpy dtype of the stored values
    unit: str | None = None  # for timestamps: s, ms, us or ns
    timezone: str | None = None


def _schema_columns(schema: _Table) -> list[Column]:
    if schema.scalar(0, "h", 0) != 0:
        raise ArrowFormatError("big-endian Arrow data is not supported")
    cols = []
    for f in schema.tables(1):
        name = f.string(0) or ""
        tag = int(f.scalar(2, "B", 0))
        t = f.table(3)
        if f.table(4) is not None:
            raise ArrowFormatError(f"column {name!r} is dictionary-encoded; candle columns are plain numbers")
        if tag == _INT and t is not None:
            bits, signed = int(t.scalar(0, "i", 0)), bool(t.scalar(1, "?", False))
            if bits not in (8, 16, 32, 64):
                raise ArrowFormatError(f"column {name!r}: {bits}-bit integers")
            cols.append(Column(name, "int", f"<{'i' if signed else 'u'}{bits // 8}"))
        elif tag == _FLOAT and t is not None:
            precision = int(t.scalar(0, "h", 0))
            if precision not in _FLOAT_DTYPES:
                raise ArrowFormatError(f"column {name!r}: half-precision floats")
            cols.append(Column(name, "float", _FLOAT_DTYPES[precision]))
        elif tag == _TIMESTAMP and t is not None:
            unit = int(t.scalar(0, "h", 0))
            cols.append(Column(name, "timestamp", "<i8", TIME_UNITS[unit], t.string(1)))
        else:
            kind = _TYPE_NAMES.get(tag, f"type {tag}")
            raise ArrowFormatError(f"column {name!r} holds {kind} values; a candle file has only numbers and timestamps")
    return cols


def _decompress(raw: memoryview, codec: int | None, what: str) -> bytes | memoryview:
    if codec is None or len(raw) == 0:
        return raw
    if len(raw) < 8:
        raise ArrowFormatError(f"{what}: compressed buffer shorter than its length prefix")
    n = struct.unpack_from("<q", raw, 0)[0]
    body = raw[8:]
    if n == -1:
        return body
    if codec == _ZSTD:
        raise ArrowFormatError("ZSTD-compressed Arrow buffers are not supported (freqtrade writes LZ4; "
                               "re-save with compression='lz4' or 'uncompressed')")  # fmt: skip
    import lz4.frame  # only the feather path needs it

    try:
        out = lz4.frame.decompress(bytes(body))
    except RuntimeError as e:
        raise ArrowFormatError(f"{what}: LZ4 data does not decompress ({e})") from None
    if len(out) != n:
        raise ArrowFormatError(f"{what}: LZ4 data gives {len(out)} bytes, its header says {n}")
    return out


def _message(data: bytes, offset: int, meta_len: int) -> _Table:
    """The flatbuffer Message of a block (with or without the 0xFFFFFFFF continuation)."""
    if offset < 8 or offset + meta_len > len(data) or meta_len < 8:
        raise ArrowFormatError("a record batch points outside the file (truncated?)")
    p = offset
    if data[p : p + 4] == b"\xff\xff\xff\xff":
        p += 4
    n = struct.unpack_from("<i", data, p)[0]
    p += 4
    if n <= 0 or p + n > offset + meta_len:
        raise ArrowFormatError("a record batch's metadata length is out of range (truncated?)")
    return _root(data[p : p + n])


def read_arrow_file(data: bytes) -> tuple[list[Column], dict[str, np.ndarray]]:
    """Every column of an Arrow IPC file as one numpy array (batches concatenated).

    Raises ArrowFormatError for anything that is not a complete, readable file of flat
    fixed-width columns without nulls.
    """
    if not data.startswith(MAGIC):
        raise ArrowFormatError("not an Arrow IPC file (no ARROW1 magic)")
    if len(data) < 16 or data[-6:] != MAGIC:
        raise ArrowFormatError("the Arrow file ends early (truncated: no footer)")
    footer_len = struct.unpack_from("<i", data, len(data) - 10)[0]
    start = len(data) - 10 - footer_len
    if footer_len <= 0 or start < 8:
        raise ArrowFormatError("the Arrow file's footer length is out of range (truncated or corrupt)")
    try:
        footer = _root(data[start : start + footer_len])
        schema = footer.table(1)
        if schema is None:
            raise ArrowFormatError("the Arrow file has no schema")
        columns = _schema_columns(schema)
        blocks = footer.structs(3, "qi4xq")  # Block: offset, metaDataLength, (pad), bodyLength
    except struct.error:
        raise ArrowFormatError("the Arrow footer is corrupt") from None
    parts: dict[str, list[np.ndarray]] = {c.name: [] for c in columns}
    for offset, meta_len, body_len in blocks:
        try:
            msg = _message(data, offset, meta_len)
            if int(msg.scalar(1, "B", 0)) != _RECORD_BATCH:
                raise ArrowFormatError("a record batch block does not hold a record batch")
            batch = msg.table(2)
            if batch is None:
                raise ArrowFormatError("a record batch message has no header")
            n_rows = int(batch.scalar(0, "q", 0))
            nodes = batch.structs(1, "qq")
            buffers = batch.structs(2, "qq")
            comp = batch.table(3)
        except struct.error:
            raise ArrowFormatError("a record batch's metadata is corrupt (truncated?)") from None
        codec = None if comp is None else int(comp.scalar(0, "b", _LZ4_FRAME))
        body_at = offset + meta_len
        if body_at + body_len > len(data):
            raise ArrowFormatError("a record batch's body runs past the end of the file (truncated)")
        if len(nodes) != len(columns) or len(buffers) != 2 * len(columns):
            raise ArrowFormatError("a record batch does not match the schema (corrupt)")
        body = memoryview(data)[body_at : body_at + body_len]
        for k, col in enumerate(columns):
            length, nulls = nodes[k]
            if length != n_rows:
                raise ArrowFormatError(f"column {col.name!r} has {length} rows in a batch of {n_rows}")
            if nulls:
                raise ArrowFormatError(f"column {col.name!r} has {nulls} null values")
            off, size = buffers[2 * k + 1]
            if off < 0 or off + size > body_len:
                raise ArrowFormatError(f"column {col.name!r} points outside its batch (corrupt)")
            values = _decompress(body[off : off + size], codec, f"column {col.name!r}")
            dt = np.dtype(col.dtype)
            if len(values) < n_rows * dt.itemsize:
                raise ArrowFormatError(f"column {col.name!r} holds fewer bytes than {n_rows} rows need")
            parts[col.name].append(np.frombuffer(values, dtype=dt, count=n_rows))
    out = {c.name: np.concatenate(parts[c.name]) if parts[c.name] else np.empty(0, np.dtype(c.dtype)) for c in columns}
    return columns, out
