"""On-disk float32 row files and the LightGBM `Sequence` that streams them.

Why: the seed concatenated every symbol's float64 DataFrame and ran out of memory. Here each
symbol's feature rows are written once, as raw float32 (C order, no header) in a work
directory, and every consumer reads just the rows and columns it needs, in bounded chunks:
- LightGBM builds its binned Dataset from a list of `RowSequence` objects (random single rows
  for the bin-boundary sample, then contiguous batches), so the raw matrix is never in memory;
- CatBoost and the predictions read chunks with `RowFile.read_rows`.

Files are read with `os.preadv` into fresh buffers rather than memory-mapped: pages of a mapped
file count towards the process's RSS for as long as the mapping lives, buffers are freed as
soon as a chunk has been consumed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np

_ITEM = np.dtype(np.float32).itemsize


class RowFileError(RuntimeError):
    """A row file that does not match its expected shape."""


class RowWriter:
    """Append float32 rows of a fixed width to a raw file."""

    def __init__(self, path: Path, n_cols: int):
        self.path = Path(path)
        self.n_cols = int(n_cols)
        self.n_rows = 0
        self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def append(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.n_cols:
            raise RowFileError(f"{self.path}: rows of shape {rows.shape}, expected (*, {self.n_cols})")
        np.ascontiguousarray(rows, dtype=np.float32).tofile(self._f)
        self.n_rows += len(rows)

    def close(self) -> RowFile:
        self._f.close()
        return RowFile(self.path, self.n_rows, self.n_cols)

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._f.closed:
            self._f.close()


@dataclass(frozen=True)
class RowFile:
    """A raw float32 (n_rows, n_cols) matrix on disk."""

    path: Path
    n_rows: int
    n_cols: int

    def __post_init__(self) -> None:
        size = os.path.getsize(self.path)
        if size != self.n_rows * self.n_cols * _ITEM:
            raise RowFileError(f"{self.path}: {size} bytes, expected {self.n_rows} x {self.n_cols} float32")

    @property
    def row_bytes(self) -> int:
        return self.n_cols * _ITEM

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a fresh (stop - start, n_cols) float32 array."""
        start, stop = max(0, start), min(self.n_rows, stop)
        out = np.empty((max(0, stop - start), self.n_cols), dtype=np.float32)
        if out.size:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                got = os.preadv(fd, [memoryview(out).cast("B")], start * self.row_bytes)
            finally:
                os.close(fd)
            if got != out.nbytes:
                raise RowFileError(f"{self.path}: short read ({got} of {out.nbytes} bytes)")
        return out

    def read_rows(self, idx: np.ndarray, cols: np.ndarray | None = None, chunk: int = 65_536) -> np.ndarray:
        """Rows `idx` (ascending) restricted to `cols`, read span by span."""
        idx = np.asarray(idx, dtype=np.int64)
        width = self.n_cols if cols is None else len(cols)
        out = np.empty((len(idx), width), dtype=np.float32)
        pos = 0
        for part in _spans(idx, chunk):
            block = self.read(int(part[0]), int(part[-1]) + 1)
            sel = block[part - part[0]]
            out[pos : pos + len(part)] = sel if cols is None else sel[:, cols]
            pos += len(part)
        return out

    def iter_rows(self, idx: np.ndarray, cols: np.ndarray | None = None, chunk: int = 65_536) -> Iterator[np.ndarray]:
        """`read_rows` in pieces of at most `chunk` rows, for bounded-memory scoring."""
        idx = np.asarray(idx, dtype=np.int64)
        for s in range(0, len(idx), chunk):
            yield self.read_rows(idx[s : s + chunk], cols, chunk)


def _spans(idx: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    """Split ascending indices into parts whose covering span is at most ~4 x chunk rows."""
    s = 0
    n = len(idx)
    while s < n:
        e = min(n, s + chunk)
        while e - s > 1 and idx[e - 1] - idx[s] >= 4 * chunk:
            e = s + max(1, (e - s) // 2)
        yield idx[s:e]
        s = e


class RowSequence(lgb.Sequence):
    """Selected rows and columns of a `RowFile`, as LightGBM's streaming data interface.

    Single-row access returns float64 (LightGBM builds its bin-boundary sample from these rows
    with `np.array(list(rows))`, so one dtype for all); slices return float32 (pushed to the
    Dataset as is, no conversion).
    """

    batch_size = 16_384

    def __init__(self, rows: RowFile, idx: np.ndarray, cols: np.ndarray):
        self.rows = rows
        self.idx = np.asarray(idx, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        if len(self.idx) and (self.idx[0] < 0 or self.idx[-1] >= rows.n_rows or np.any(np.diff(self.idx) <= 0)):
            raise RowFileError(f"{rows.path}: row indices must be ascending and inside 0..{rows.n_rows - 1}")
        self._fd = -1

    def __len__(self) -> int:
        return len(self.idx)

    def _one(self, i: int) -> np.ndarray:
        if self._fd < 0:
            self._fd = os.open(self.rows.path, os.O_RDONLY)
        buf = np.empty(self.rows.n_cols, dtype=np.float32)
        os.preadv(self._fd, [memoryview(buf).cast("B")], int(self.idx[i]) * self.rows.row_bytes)
        return buf[self.cols].astype(np.float64)

    def __getitem__(self, item: int | slice | list[int]) -> np.ndarray:
        if isinstance(item, (int, np.integer)):
            i = int(item)
            if i < 0:
                i += len(self)
            if not 0 <= i < len(self):
                raise IndexError(i)
            return self._one(i)
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            return self.rows.read_rows(self.idx[start:stop:step], self.cols)
        if isinstance(item, list):
            sel = np.asarray(item, dtype=np.int64)
            order = np.argsort(sel, kind="stable")
            got = self.rows.read_rows(self.idx[sel[order]], self.cols)
            out = np.empty_like(got)
            out[order] = got
            return out
        raise TypeError(f"RowSequence index must be int, slice or list, got {type(item).__name__}")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:  # the fd of the sampling phase
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
