"""Config checks that need more than a type and a bound: the retrain cron read as a standard
crontab, the database URL as asyncpg will read it, the secrets' formats, and the config against
this machine (the directories by trying, their free space, the dashboard's address).

Each function returns the problem as one line without the key path (the caller knows the key),
or a list of `key: reason` lines; none prints a secret. `bot.config` calls them while loading,
so every command refuses what `bot run` would only find out later.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

# --- the retrain cron -----------------------------------------------------------------------

_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # standard crontab numbering: 0 (and 7) = Sunday


def _dow_value(s: str) -> int:
    if s.isdigit() and 0 <= int(s) <= 7:
        return int(s)
    if s in _DOW:
        return _DOW.index(s)
    raise ValueError(f"day of week {s!r} is not 0-7 or sun..sat")


def _dow_days(field: str) -> set[int]:
    """The weekdays (0 = Sunday) a crontab day-of-week field names: lists, ranges, steps."""
    days: set[int] = set()
    for part in field.lower().split(","):
        rng, slash, step_s = part.partition("/")
        if slash and not (step_s.isdigit() and int(step_s) > 0):
            raise ValueError(f"day of week step {step_s!r} is not a positive number")
        step = int(step_s) if slash else 1
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            a, b = rng.split("-", 1)
            lo, hi = _dow_value(a), _dow_value(b)
        else:
            lo = _dow_value(rng)
            hi = 7 if slash else lo  # "1/2": from Monday to the end of the week
        if lo > hi:
            raise ValueError(f"day of week range {rng!r} runs backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return days


def standard_cron(expr: str, now: datetime | None = None) -> str:
    """`expr` (minute hour day month weekday, UTC) read as a standard crontab, rewritten for
    APScheduler, which the daemon schedules with; raises ValueError with the reason.

    APScheduler 3 numbers weekdays from Monday (`0 3 * * 6` is a Sunday there, a Saturday in
    crontab(5)), so numeric weekdays are turned into names (`sat`). It also fires only when the
    day of month AND the weekday match (crontab: either), so giving both is refused. An
    expression with no next time (`0 3 30 2 *`) is refused too: the retrain would never run.
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) == 5 and fields[4] != "*":
        days = _dow_days(fields[4])
        fields[4] = "*" if len(days) == 7 else ",".join(_DOW[d] for d in sorted(days))
        if fields[2] != "*" and fields[4] != "*":
            raise ValueError(f"gives both a day of month ({fields[2]}) and a weekday ({fields[4]}): crontab fires when "
                             "either matches, the scheduler only when both do; give one of them")  # fmt: skip
    out = " ".join(fields)
    trigger = CronTrigger.from_crontab(out, timezone=UTC)  # the wrong number of fields is said here
    if trigger.get_next_fire_time(None, now or datetime.now(UTC)) is None:
        raise ValueError(f"{expr!r} never fires (no such date): the retrain would never run")
    return out


# --- the database URL -------------------------------------------------------------------------


def dsn_problem(dsn: str) -> str | None:
    """Why asyncpg cannot use `dsn` (a postgresql:// URL), without repeating it (it may hold a
    password); None if it can. asyncpg takes no libpq key=value strings."""
    if not dsn:
        return None
    if "://" not in dsn:
        if "=" in dsn:
            return "a key=value string; the database client takes a URL: postgresql://user@host:5432/dbname"
        return "not a URL: must be postgresql://user@host:5432/dbname"
    scheme, rest = dsn.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return f"scheme {scheme[:20]!r} is not postgresql:// (the store speaks PostgreSQL only)"
    netloc, _, query = rest.partition("?")
    netloc = netloc.split("/", 1)[0]
    ports = [h.rsplit("]", 1)[-1].partition(":")[2] for h in netloc.rsplit("@", 1)[-1].split(",")]
    ports += parse_qs(query).get("port", [])
    for port in ports:
        for p in port.split(","):
            if p and not (p.isdigit() and 1 <= int(p) <= 65535):
                return f"port {p[:20]!r} is not a number in 1..65535"
    return None


# --- secrets ------------------------------------------------------------------------------------


def telegram_token_problem(token: str) -> str | None:
    """@BotFather's tokens are `<bot id>:<letters, digits, - or _>` (35 of them today; the length is
    not checked); the most common slip is the `bot` prefix of the API URL. Telegram answers a
    malformed token with 404 Not Found on every call. The token is never part of the reason."""
    tok = token.strip()
    bot_id, colon, secret = tok.partition(":")
    if tok.lower().startswith("bot") and bot_id[3:].isdigit():
        return "starts with 'bot' (that prefix belongs to the API URL, not the token); not shown"
    if not (colon and bot_id.isdigit() and secret and secret.replace("-", "").replace("_", "").isalnum()):
        return "not a Bot API token (<digits>:<letters and digits>, as @BotFather gives it); not shown"
    return None


def telegram_chat_problem(chat_id: str, commands: bool) -> str | None:
    """The chat is a number (a group's is negative); a public channel may be `@name` for the push
    alone: the owner check of the chat commands compares the numeric id of each message."""
    c = chat_id.strip()
    if c.lstrip("-").isdigit():
        return None
    if c.startswith("@") and len(c) > 5 and c[1:].replace("_", "").isalnum():
        return None if not commands else ("a @channel name cannot own the chat commands (messages carry the numeric "
                                          "chat id): give the numeric id, or set telegram.commands: false")  # fmt: skip
    return "must be the chat's numeric id (a group's starts with -); not shown"


# --- the machine ------------------------------------------------------------------------------

#: Free space (MB) a directory must have at start, beyond the 4 kB the probe writes: the
#: embedded database's cluster is ~40-50 MB after initdb (with a 16 MB WAL segment); a bundle is
#: under 1 MB; logs need only what the probe showed (a log disk may be small: it rotates).
MIN_FREE_MB = {"data_dir": 64, "models_dir": 1, "logs_dir": 0}

_WHY = {errno.EROFS: "on a read-only file system", errno.EACCES: "not writable by this user",
        errno.EPERM: "not writable by this user", errno.ENOSPC: "on a full disk",
        errno.EDQUOT: "over this user's disk quota"}  # fmt: skip


def directory_problem(target: Path, min_free_mb: int) -> str | None:
    """Why `target` cannot be (made) a directory this process writes, found by trying: a
    directory and a 4 kB file are made and removed in its nearest existing ancestor (permission
    bits say little to root, nothing about a read-only mount or a full disk). None if it can."""
    p = target
    while True:
        try:
            os.lstat(p)
            break
        except (FileNotFoundError, NotADirectoryError):  # not there yet, or under a file: look further up
            if p == p.parent:
                break
            p = p.parent
        except PermissionError:  # some directory above is not searchable (lexists would say "absent")
            return f"{target} cannot be reached: a directory above {p} is not searchable by this user (EACCES)"
    if not p.is_dir():
        return f"{target} cannot be a directory: {p} is not a directory"
    try:
        probe = tempfile.mkdtemp(prefix=".bot-probe-", dir=p)
        try:
            with open(os.path.join(probe, "probe"), "wb") as f:
                f.write(b"\0" * 4096)
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    except OSError as e:
        why = _WHY.get(e.errno or 0, os.strerror(e.errno or 0) if e.errno else str(e))
        return f"{target} cannot be written: {p} is {why} ({errno.errorcode.get(e.errno or 0, '?')})"
    st = os.statvfs(p)
    free_mb = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize // 2**20
    if free_mb < min_free_mb:
        return f"{target}: its disk is (nearly) full: {free_mb} MB free at {p}, needs at least {min_free_mb} MB"
    return None


def listen_problem(host: str, port: int) -> str | None:
    """Why this process cannot listen on host:port, by trying: a privileged port for a user
    without the right, an address this machine does not have. A port in use is no problem
    here (it may be this daemon's own, read by `bot status`): the daemon says so at start."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"{host} does not resolve ({e.strerror})"
    first: OSError | None = None
    for family, _, _, _, addr in infos:  # as asyncio's server: one address that works is enough
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind(addr)
                return None
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return None
                if e.errno == errno.EACCES:
                    return (f"port {port} is privileged (below 1024) and this user may not listen on it: use a port "
                            "of 1024 or more")  # fmt: skip
                first = first or e
    return f"cannot listen on {host}:{port}: {first.strerror if first else 'no address'}"
