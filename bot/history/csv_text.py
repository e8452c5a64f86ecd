"""Header-less numeric CSV text -> numpy columns, with the checks pandas does not make.

pandas' C reader is the fast part, but it fills a row with too few fields with NaN without a
word and names no row when a number does not parse. So the field count of every line is
checked first, vectorised (comma positions -> line of each comma -> count per line), and a
parse failure is located afterwards by a plain scan (only on that failure path).
"""

from __future__ import annotations

import io

import numpy as np

from bot.history.errors import Refused
from models.candles import exact_float_options


def check_field_counts(data: bytes, n_fields: int, *, first_line: int = 1, words: tuple[str, str] = ("line", "column")) -> int:
    """The number of lines of `data` (a final empty line excepted); Refused naming the first
    line without exactly `n_fields` comma-separated fields. `first_line`: the number of the
    first line of `data` in the file, for the message; `words`: what a line and a field are
    called there (a JSON list's are rows and values)."""
    if not data:
        return 0
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    n_lines = len(newlines) + (0 if data.endswith(b"\n") else 1)
    commas = np.flatnonzero(buf == 44)
    per_line = np.bincount(np.searchsorted(newlines, commas), minlength=n_lines)[:n_lines]
    bad = np.flatnonzero(per_line != n_fields - 1)
    if len(bad):
        i = int(bad[0])
        n = int(per_line[i]) + 1
        row, field = words
        raise Refused(f"{row} {first_line + i} has {n} {field}{'s' if n != 1 else ''}, expected {n_fields}")
    return n_lines


def _locate_unparsable(data: bytes, columns: dict[int, type], first_line: int, words: tuple[str, str]) -> str:
    for i, line in enumerate(data.split(b"\n")):
        fields = line.rstrip(b"\r").split(b",")
        for k, kind in columns.items():
            text = fields[k].decode("utf-8", "replace").strip() if k < len(fields) else ""
            try:
                int(text) if kind is np.int64 else float(text)
            except ValueError:
                what = "an integer" if kind is np.int64 else "a number"
                return f"{words[0]} {first_line + i}, {words[1]} {k + 1}: {text[:40]!r} is not {what}"
    return "a value does not parse"


def read_columns(data: bytes, n_fields: int, columns: dict[int, type], *, first_line: int = 1,
                 words: tuple[str, str] = ("line", "column")) -> dict[int, np.ndarray]:
    """Parse `data` (header-less CSV, `n_fields` per line) and return the wanted `columns`
    (index -> np.int64 or np.float64). Refused on a wrong field count or a value that is not a
    number (an empty field or 'nan' reads as NaN; the caller's value checks drop such rows)."""
    import pandas as pd  # heavy; only the import command reads CSV text

    check_field_counts(data, n_fields, first_line=first_line, words=words)
    if not data.strip():
        return {k: np.empty(0, dtype=kind) for k, kind in columns.items()}
    try:
        df = pd.read_csv(io.BytesIO(data), header=None, names=range(n_fields), usecols=sorted(columns),
                         dtype=columns, engine="c", skip_blank_lines=False, **exact_float_options())  # fmt: skip
    except (ValueError, pd.errors.ParserError):
        raise Refused(_locate_unparsable(data, columns, first_line, words)) from None
    return {k: df[k].to_numpy(kind) for k, kind in columns.items()}
