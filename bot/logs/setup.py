"""Logging: structlog events rendered twice — JSON lines for machines, short lines for people.

Every module logs `log.info("event_name", key=value, ...)`. `setup_logging` routes those events
through the standard library to:
  - `<logs_dir>/bot.jsonl`: one JSON object per event (timestamp, level, logger, event, keys);
  - `<logs_dir>/bot.log`, the console and Telegram (`bot.telegram`): one short line a person can
    read, e.g. `11-30 12:31 BUY SOLUSDT 1.20 @ 98.31  er +0.21%  p 0.64  size 2.1%  [paper]`.
    The formats live in one registry (`bot.logs.event_lines`, which also documents the event names
    and fields); an unregistered event shows its `text` key, else `event key=value ...`.

Both files rotate by size (`logging.max_mb`, `logging.backups`: a bounded number of files);
`bot tail` reads the JSON file and its rotated predecessors and follows across rotation.

A redaction step runs before both renderers: keys that look like secrets are masked, and any
string value that contains a registered secret (API key, DSN password) is masked wherever it
appears, so a secret cannot leak through an exception message or a URL either.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import logging.handlers
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bot.logs.event_lines import line_time, render_body

if TYPE_CHECKING:
    from bot.config import Config

_SECRET_KEY_PARTS = ("secret", "password", "api_key", "apikey", "token", "signature", "dsn")
_registered_secrets: set[str] = set()
MASK = "********"


def register_secret(*values: str | None) -> None:
    """Mask these literal strings in every log line from now on (ignores short/empty values)."""
    for v in values:
        if v and len(v) >= 6:
            _registered_secrets.add(v)


def _mask_value(v: Any) -> Any:
    if isinstance(v, str) and _registered_secrets:
        for s in _registered_secrets:
            if s in v:
                v = v.replace(s, MASK)
    return v


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secret-looking keys and any registered secret value."""
    for k in list(event.keys()):
        if any(p in k.lower() for p in _SECRET_KEY_PARTS) and k != "event":
            event[k] = MASK if event[k] else event[k]
        else:
            event[k] = _mask_value(event[k])
    return event


_line_tag = ""  # logging.line_tag: set by setup_logging


def add_line_tag(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: carry `logging.line_tag` in every event, so that the JSON log (and
    `bot tail`, which renders from it) has it too."""
    if _line_tag:
        event.setdefault("line_tag", _line_tag)
    return event


LEVEL_TAGS = {"debug": "DEBUG ", "info": "", "warning": "WARN ", "error": "ERROR ", "critical": "CRITICAL "}


class HumanRenderer:
    """`MM-DD HH:MM [WARN |ERROR ]<body>` in UTC, the body from `bot.logs.event_lines` — short enough
    for Telegram. The same function renders `bot tail` lines from the JSON log."""

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        return human_line(event)


def human_line(event: Mapping[str, Any], *, with_exception: bool = True) -> str:
    """One event (as logged, or as read back from the JSON log) -> its short human line."""
    level = str(event.get("level", "info")).lower()
    line = f"{line_time(event)} {LEVEL_TAGS.get(level, level.upper() + ' ')}{render_body(event)}"
    if event.get("line_tag"):  # e.g. every line of `make demo` ends with [demo]
        line += f"  [{event['line_tag']}]"
    exc = event.get("exception")
    if event.get("event") == "error":  # an error the daemon survived: one line (the JSON log keeps the traceback)
        return line
    return f"{line}\n{exc}" if (exc and with_exception) else line


class _HumanFormatter(structlog.stdlib.ProcessorFormatter):
    """Renders a record's human line once and reuses it for every human handler (bot.log, the
    console, Telegram): the line is the same text everywhere, so it costs one render."""

    def format(self, record: logging.LogRecord) -> str:
        cached = record.__dict__.get("_human_line")
        if cached is None:
            cached = super().format(record)
            record.__dict__["_human_line"] = cached
        return cached


def _formatter(renderer: Any) -> logging.Formatter:
    cls = _HumanFormatter if isinstance(renderer, HumanRenderer) else structlog.stdlib.ProcessorFormatter
    return cls(
        foreign_pre_chain=_PRE_CHAIN,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )


class _LogFile(logging.handlers.RotatingFileHandler):
    """A rotating log file whose write failures (disk full, read-only, permissions) are said once
    per errno in one line on stderr, naming the path, instead of Python's traceback per record;
    logging never stops the daemon."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reported: set[object] = set()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        e = sys.exc_info()[1]
        code = getattr(e, "errno", None) or type(e).__name__
        if code in self._reported:
            return
        self._reported.add(code)
        name = errno.errorcode.get(code, str(code)) if isinstance(code, int) else code
        with contextlib.suppress(Exception):
            sys.stderr.write(f"log write failed: {self.baseFilename}: {name} (Errno {code}) {e}; "
                             "the daemon goes on, later failures of this kind are not repeated\n")  # fmt: skip


def add_human_handler(h: logging.Handler) -> logging.Handler:
    """Attach `h` to the root logger rendering the short human lines (e.g. the Telegram push);
    `logging.getLogger().removeHandler(h)` detaches it."""
    h.setFormatter(_formatter(HumanRenderer()))
    logging.getLogger().addHandler(h)
    return h


_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    add_line_tag,
    redact,
]


def setup_logging(
    logs_dir: str | Path | None,
    *,
    level: str = "info",
    json_file: str = "bot.jsonl",
    human_file: str = "bot.log",
    console: bool = True,
    stream: Any = None,
    max_bytes: int = 20 << 20,
    backups: int = 5,
    extra_handlers: Iterable[logging.Handler] = (),
    line_tag: str = "",
) -> None:
    """Configure structlog + stdlib handlers. Safe to call again (replaces handlers).
    `line_tag`: appended as `[tag]` to every human line (`logging.line_tag`)."""
    global _line_tag
    _line_tag = line_tag
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level.upper())

    def handler(h: logging.Handler, renderer: Any) -> logging.Handler:
        h.setFormatter(_formatter(renderer))
        return h

    handlers: list[logging.Handler] = []
    if logs_dir is not None:
        d = Path(logs_dir)
        d.mkdir(parents=True, exist_ok=True)
        handlers.append(handler(
            _LogFile(d / json_file, maxBytes=max_bytes, backupCount=backups),
            structlog.processors.JSONRenderer(),
        ))  # fmt: skip
        handlers.append(handler(
            _LogFile(d / human_file, maxBytes=max_bytes, backupCount=backups),
            HumanRenderer(),
        ))  # fmt: skip
    if console:
        handlers.append(handler(logging.StreamHandler(stream or sys.stderr), HumanRenderer()))
    handlers.extend(handler(h, HumanRenderer()) for h in extra_handlers)
    for h in handlers:
        root.addHandler(h)
    # Chatty libraries: warnings only.
    # httpx logs every request URL at info, and a Telegram URL holds the bot token.
    for name in ("asyncio", "ccxt", "aiohttp", "apscheduler", "asyncpg", "httpx", "httpcore", "telegram"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # asyncpg's pool warns with a traceback each time it fails to reconnect while the database is
    # down; the daemon says that once in its own words (store_outage, bot.store.outage).
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)

    structlog.configure(
        processors=[*_PRE_CHAIN, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def setup_from_config(cfg: Config, *, console: bool | None = None) -> None:
    """Logging per the config's `logging` and `paths` sections, registering its secrets."""
    s = cfg.secrets
    register_secret(
        s.api_key.get_secret_value() if s.api_key else None,
        s.api_secret.get_secret_value() if s.api_secret else None,
        s.telegram_token.get_secret_value() if s.telegram_token else None,
        *_dsn_password(cfg.database.dsn.get_secret_value()),
    )
    setup_logging(
        cfg.paths.logs_dir,
        level=cfg.logging.level,
        json_file=cfg.logging.json_file,
        human_file=cfg.logging.human_file,
        console=cfg.logging.console if console is None else console,
        max_bytes=cfg.logging.max_mb << 20,
        backups=cfg.logging.backups,
        line_tag=cfg.logging.line_tag,
    )


def _dsn_password(dsn: str) -> Iterable[str]:
    if "://" in dsn and "@" in dsn:
        cred = dsn.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in cred:
            yield cred.split(":", 1)[1]
    for part in dsn.split():
        if part.startswith("password="):
            yield part.split("=", 1)[1]
