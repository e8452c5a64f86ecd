"""A symbol's files -> one ascending run of candles; overlapping files must agree.

Monthly and daily archives, or an archive and a freqtrade file, may hold the same minute.
That is fine when the candles are equal (every value, exactly, after parsing the decimal
text), and the repeats are counted; a minute with different values in two files is an error
that names the minute, both files and the first value that differs, and the symbol is not
imported (no file is trusted over the other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.history.errors import Refused
from bot.history.parse import ParsedFile
from models.candles import FIELDS, Candles
from models.timeutil import fmt_ts


@dataclass(frozen=True)
class Merged:
    candles: Candles
    duplicates: int  # minutes found in more than one file (same values), counted once per extra copy


def merge_files(files: list[ParsedFile]) -> Merged:
    """Merge one symbol's parsed files; Refused naming both files at the first disagreement."""
    parts = [f for f in files if len(f.candles)]
    if not parts:
        return Merged(Candles.empty(), 0)
    if len(parts) == 1:
        return Merged(parts[0].candles, 0)
    parts.sort(key=lambda f: int(f.candles.ts[0]))
    ts = np.concatenate([f.candles.ts for f in parts])
    src = np.concatenate([np.full(len(f.candles), k, dtype=np.int32) for k, f in enumerate(parts)])
    if np.all(np.diff(ts) > 0):  # the usual case: files side by side, no minute twice
        return Merged(Candles.concat(f.candles for f in parts), 0)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    src = src[order]
    vals = {f: np.concatenate([getattr(p.candles, f) for p in parts])[order] for f in FIELDS}
    same = np.flatnonzero(ts[1:] == ts[:-1])
    differ = np.zeros(len(same), dtype=bool)
    for f in FIELDS:
        a, b = vals[f][same], vals[f][same + 1]
        differ |= (a != b) & ~(np.isnan(a) & np.isnan(b))
    if differ.any():
        i = int(same[np.argmax(differ)])  # the earliest minute that differs
        f = next(f for f in FIELDS if not (vals[f][i] == vals[f][i + 1] or np.isnan(vals[f][i]) and np.isnan(vals[f][i + 1])))
        fa, fb = parts[int(src[i])], parts[int(src[i + 1])]
        raise Refused(f"{fmt_ts(int(ts[i]))} differs between {fa.name} ({f} {vals[f][i]!r}) and "
                      f"{fb.name} ({f} {vals[f][i + 1]!r})")  # fmt: skip
    keep = np.ones(len(ts), dtype=bool)
    keep[same + 1] = False
    return Merged(Candles(ts[keep], *(vals[f][keep] for f in FIELDS)), len(same))
