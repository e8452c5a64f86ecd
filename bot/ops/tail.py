"""Reading the JSON log back for `bot tail` (and Telegram's `/tail`): last lines, filters, follow.

The source is the JSON log (`bot.jsonl`), not `bot.log`: it holds every field, so the human line
is rebuilt with the same renderer (`bot.logs.setup.human_line`) and can be filtered by level and time.
Both logs rotate by renaming (`bot.jsonl` -> `bot.jsonl.1` -> ... , `logging.handlers.
RotatingFileHandler`); a reader follows that by watching the inode behind the path: when it
changes, the rest of the old file is read (it is still open), then any file that came and went
in between (found among the numbered backups by inode), then the new file from its start. No
line is lost or repeated as long as the writer keeps fewer rotations in flight than `backups`.
Works whether the daemon runs or not: it only reads files.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.logs.event_lines import iso_to_ms
from models.timeutil import DAY_MS, HOUR_MS, MINUTE_MS, parse_time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_MS = {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_since(text: str, now_ms: int | None = None) -> int:
    """'90m', '1h', '2d', '1w' (ago) or a time `parse_time` reads -> epoch ms."""
    m = _SPAN.match(text)
    if m:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return now - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    return parse_time(text)


@dataclass(frozen=True)
class Filter:
    since_ms: int | None = None
    min_level: str = "debug"

    def __call__(self, rec: dict[str, Any]) -> bool:
        if LEVELS.get(str(rec.get("level", "info")).lower(), 20) < LEVELS[self.min_level]:
            return False
        if self.since_ms is not None:
            ts = iso_to_ms(rec.get("timestamp"))
            if ts is None or ts < self.since_ms:
                return False
        return True


def log_chain(path: Path) -> list[Path]:
    """The log and its existing rotated backups, oldest first: [x.5, x.4, ..., x.1, x]."""
    backups = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), p))
    return [p for _, p in sorted(backups, reverse=True)] + ([path] if path.exists() else [])


def parse_line(raw: str) -> dict[str, Any] | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                rec = parse_line(raw)
                if rec is not None:
                    yield rec
    except FileNotFoundError:  # rotated away between listing and opening
        return


class Follower:
    """Yields complete new lines appended to `path`, across rotations (see module doc)."""

    def __init__(self, path: Path, *, from_start: bool = False):
        self.path = path
        self._f: Any = None
        self._ino: int | None = None
        self._buf = ""
        self._open(from_start=from_start)

    def _open(self, *, from_start: bool) -> None:
        try:
            f = open(self.path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            self._f, self._ino = None, None
            return
        if not from_start:
            f.seek(0, os.SEEK_END)
        self._f, self._ino = f, os.fstat(f.fileno()).st_ino

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _drain(self) -> list[str]:
        if self._f is None:
            return []
        self._buf += self._f.read()
        *lines, self._buf = self._buf.split("\n")
        return lines

    def poll(self) -> list[str]:
        """Whatever complete lines are new since the last call (possibly none)."""
        lines = self._drain()
        try:
            cur = os.stat(self.path).st_ino
        except FileNotFoundError:
            return lines  # between the rename and the writer's reopen
        if cur == self._ino:
            return lines
        # Rotated: the old file is fully read above. Read backups newer than it, then the new one.
        old = self._ino
        if self._buf:  # a final line without newline in the old file
            lines.append(self._buf)
            self._buf = ""
        self.close()
        chain = log_chain(self.path)[:-1]  # backups, oldest first
        inodes = [_ino(p) for p in chain]
        if old in inodes:
            for p in chain[inodes.index(old) + 1 :]:
                lines.extend(line for line in p.read_text(encoding="utf-8", errors="replace").split("\n") if line)
        self._open(from_start=True)
        lines.extend(self._drain())
        return lines


def _ino(p: Path) -> int | None:
    try:
        return os.stat(p).st_ino
    except FileNotFoundError:
        return None


def tail_records(
    path: Path,
    keep: Filter,
    n: int | None = 20,
    *,
    follow: bool = False,
    interval_s: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[dict[str, Any]]:
    """The last `n` records passing `keep` (all if n is None) across the log and its backups;
    then, with `follow`, every new one as it is written, across rotations, until `stop()`.

    The current file is read through the same open handle that then follows it, so nothing
    written between "print the last lines" and "follow" is lost or printed twice."""
    backups = log_chain(path)
    backups = backups[:-1] if backups and backups[-1] == path else backups
    fol = Follower(path, from_start=True)
    try:
        last: deque[dict[str, Any]] = deque(maxlen=n) if n is not None else deque()
        if n != 0:
            for p in backups:
                last.extend(rec for rec in _records(p) if keep(rec))
        # A log that did not exist yet has no past: everything in it is followed as new.
        for raw in fol.poll() if fol._f is not None else []:
            rec = parse_line(raw)
            if rec is not None and keep(rec) and n != 0:
                last.append(rec)
        yield from last
        last.clear()
        while follow and not stop():
            got = False
            for raw in fol.poll():
                rec = parse_line(raw)
                if rec is not None and keep(rec):
                    got = True
                    yield rec
            if fol._f is None:
                fol._open(from_start=True)
            if not got:
                time.sleep(interval_s)
    finally:
        fol.close()
