"""Push the short log lines to one Telegram chat, and answer the owner's commands.

Why it is built this way:
  - Logging must never wait on Telegram. `LineBuffer` is a logging handler whose `emit` only
    renders the line (as every handler does) and appends it to a bounded deque: no I/O, no
    await, thread-safe. When the deque is full the line is dropped and counted; the next
    message says how many were lost and a `telegram_dropped` warning is logged, so a slow or
    dead Telegram costs a bounded amount of memory and nothing else.
  - One sender task sends at most one message per `min_interval_s` (Telegram allows about one
    per second per chat), batching every waiting line into messages of up to
    `max_message_chars`; a `RetryAfter` from the API is obeyed; network errors back off
    (up to a minute) and the batch is put back if there is room.
  - The client is python-telegram-bot (`telegram.Bot` over httpx) with `base_url` pointed at
    `telegram.api_base`, so a local Bot API server or the tests' fake server can stand in.
    aiogram was measured too: importing it added ~120 MB RSS and ~5 s to the daemon
    (python-telegram-bot: ~7-10 MB, ~0.15 s).
  - Commands (`/status`, `/positions`, `/pnl`, `/tail`, and the operator's `/pause`, `/flatten`
    ...) are read by long polling and answered only when they come from the configured chat id;
    anything else is ignored (counted, and in the daemon recorded as refused). The answers come
    from `bot.ops.chat.commands` (the store and the log) and the daemon's controller
    (`bot.ops.control.telegram`).
The bot token is registered as a secret with `bot.logs.setup` (masked wherever it would appear) and
httpx's per-request info log, which prints URLs with the token in them, is silenced there.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from bot.logs.error_lines import log_survived
from bot.ops.chat.config import TelegramConfig
from bot.runtime.aio import wait_for

if TYPE_CHECKING:
    from bot.config import Config

log = structlog.get_logger("bot.ops.chat.push")

#: Records from these loggers are not pushed (the pusher's own traffic would feed itself).
_OWN_LOGGERS = ("bot.ops.chat", "telegram", "httpx", "httpcore")

Answerer = Callable[[str, list[str]], Awaitable[str]]


def _short(text: str) -> str:
    """A pushed line is one line: a traceback keeps only its last line (the error itself)."""
    if "\n" not in text:
        return text
    first, *rest = text.split("\n")
    last = next((x.strip() for x in reversed(rest) if x.strip()), "")
    return f"{first} | {last}" if last else first


class LineBuffer(logging.Handler):
    """A bounded, thread-safe queue of short lines; `emit` never blocks and never does I/O."""

    def __init__(self, max_pending: int = 500, level: int | str = logging.INFO):
        super().__init__(level)
        self.max_pending = max_pending
        self._lines: deque[str] = deque()
        self._replies: deque[str] = deque(maxlen=20)
        self._mutex = threading.Lock()
        self.dropped = 0  # since the last message that reported them
        self.dropped_total = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_OWN_LOGGERS):
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.push(_short(line))

    def push(self, line: str) -> bool:
        with self._mutex:
            if len(self._lines) >= self.max_pending:
                self.dropped += 1
                self.dropped_total += 1
                return False
            self._lines.append(line)
            return True

    def reply(self, text: str) -> None:
        """An answer to a chat command: sent before waiting lines."""
        with self._mutex:
            self._replies.append(text)

    def pending(self) -> int:
        with self._mutex:
            return len(self._lines) + len(self._replies)

    def take(self, max_chars: int) -> Batch | None:
        """The next message: a waiting reply, else as many lines as fit (with a note of drops)."""
        with self._mutex:
            if self._replies:
                return Batch(self._replies.popleft()[:max_chars], [], 0, reply=True)
            if not self._lines and not self.dropped:
                return None
            note = f"({self.dropped} lines dropped: Telegram was too slow)" if self.dropped else ""
            dropped, self.dropped = self.dropped, 0
            size = len(note) + 1 if note else 0
            lines: list[str] = []
            while self._lines:
                line = self._lines[0]
                if len(line) > max_chars - size:
                    line = line[: max(1, max_chars - size - 1)] + "…"
                if lines and size + len(line) + 1 > max_chars:
                    break
                lines.append(line)
                size += len(line) + 1
                self._lines.popleft()
            return Batch("\n".join(([note] if note else []) + lines), lines, dropped)

    def put_back(self, batch: Batch) -> None:
        """A message that could not be sent goes back to the front, as far as there is room."""
        with self._mutex:
            if batch.reply:
                self._replies.appendleft(batch.text)
                return
            room = max(0, self.max_pending - len(self._lines))
            keep = batch.lines[:room]
            lost = len(batch.lines) - len(keep)
            self._lines.extendleft(reversed(keep))
            self.dropped += batch.dropped + lost
            self.dropped_total += lost


@dataclass(frozen=True)
class Batch:
    """One message to send: its text, the log lines in it, the drops it reports."""

    text: str
    lines: list[str]
    dropped: int
    reply: bool = False


class TelegramPush:
    """The sender and (optionally) the command poller for one chat. `run()` until cancelled."""

    def __init__(
        self,
        cfg: TelegramConfig,
        token: str,
        chat_id: str,
        *,
        buffer: LineBuffer | None = None,
        answer: Answerer | None = None,
    ):
        # python-telegram-bot 22 warns that RetryAfter.retry_after becomes a timedelta; opt in now.
        os.environ.setdefault("PTB_TIMEDELTA", "1")
        from telegram import Bot
        from telegram.request import HTTPXRequest

        from bot.logs.setup import register_secret

        register_secret(token)
        self.cfg = cfg
        self.chat_id = str(chat_id)
        self.buffer = buffer or LineBuffer(cfg.max_pending, cfg.level.upper())
        self.answer = answer
        self.on_stranger: Callable[[Any, str], Awaitable[None]] | None = None  # bot.ops.control: records the refusal
        t = cfg.timeout_s
        self.bot = Bot(
            token,
            base_url=cfg.api_base.rstrip("/") + "/bot",
            request=HTTPXRequest(connection_pool_size=2, read_timeout=t, write_timeout=t, connect_timeout=t, pool_timeout=t),
            get_updates_request=HTTPXRequest(
                connection_pool_size=1, read_timeout=cfg.poll_timeout_s + t, write_timeout=t, connect_timeout=t, pool_timeout=t
            ),
        )
        self.stats = {"messages": 0, "lines": 0, "failures": 0, "retry_after": 0, "ignored": 0, "commands": 0}

    # --- sending ------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._send_loop(), name="telegram-send")]
        if self.cfg.commands and self.answer is not None:
            tasks.append(asyncio.create_task(self._poll_loop(), name="telegram-poll"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send_loop(self) -> None:
        from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

        loop = asyncio.get_running_loop()
        next_at = 0.0
        backoff = 1.0
        while True:
            wait = next_at - loop.time()
            await asyncio.sleep(wait if wait > 0 else min(0.1, self.cfg.min_interval_s))
            batch = self.buffer.take(self.cfg.max_message_chars)
            if batch is None:
                continue
            next_at = loop.time() + self.cfg.min_interval_s
            try:
                await wait_for(self.bot.send_message(self.chat_id, batch.text), self.cfg.timeout_s + 5)
            except RetryAfter as e:
                with warnings.catch_warnings():  # PTB 22 deprecates the int form
                    warnings.simplefilter("ignore")
                    ra = e.retry_after
                secs = ra.total_seconds() if isinstance(ra, dt.timedelta) else float(ra)
                self.stats["retry_after"] += 1
                next_at = loop.time() + max(secs, self.cfg.min_interval_s)
                self.buffer.put_back(batch)
            except (BadRequest, Forbidden, InvalidToken) as e:  # will not get better by retrying
                self.stats["failures"] += 1
                log.warning("telegram_rejected", error=type(e).__name__, detail=str(e)[:200])
            except (TelegramError, TimeoutError, OSError) as e:
                self.stats["failures"] += 1
                next_at = loop.time() + backoff
                backoff = min(backoff * 2, 60.0)
                self.buffer.put_back(batch)
                log.warning("telegram_send_failed", error=type(e).__name__, retry_in_s=round(next_at - loop.time(), 1))
            else:
                # Counted from the answer, so arrivals at Telegram are min_interval_s apart too.
                next_at = loop.time() + self.cfg.min_interval_s
                backoff = 1.0
                self.stats["messages"] += 1
                self.stats["lines"] += len(batch.lines)
            if self.buffer.dropped:
                log.warning("telegram_dropped", dropped=self.buffer.dropped, total=self.buffer.dropped_total,
                            text=f"telegram: {self.buffer.dropped_total} lines dropped so far (Telegram slower than the log)")  # fmt: skip

    # --- commands -----------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        from telegram.error import TelegramError

        offset: int | None = None
        backoff = 1.0
        while True:
            try:
                updates = await self.bot.get_updates(
                    offset=offset, timeout=self.cfg.poll_timeout_s, allowed_updates=["message"]
                )
            except (TelegramError, OSError) as e:
                log.debug("telegram_poll_failed", error=type(e).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            for u in updates:
                offset = u.update_id + 1
                msg = u.message
                if msg is None or not msg.text or not msg.text.startswith("/"):
                    continue
                if str(msg.chat.id) != self.chat_id:
                    self.stats["ignored"] += 1
                    log.info("telegram_ignored", chat=msg.chat.id)
                    if self.on_stranger is not None:
                        try:
                            await self.on_stranger(msg.chat.id, msg.text)
                        except Exception as e:  # noqa: BLE001 - the poller goes on
                            log_survived(log, "telegram refusal", e, what="telegram_refusal_failed")
                    continue
                cmd, *args = msg.text.split()
                self.stats["commands"] += 1
                try:
                    reply = await self.answer(cmd.split("@")[0].lower(), args)  # type: ignore[misc]
                except Exception as e:  # a broken answer must not stop the poller
                    log_survived(log, "telegram command", e, what="telegram_command_failed", command=cmd)
                    reply = f"{cmd}: failed ({type(e).__name__})"
                self.buffer.reply(reply)

    async def aclose(self, flush_s: float = 3.0) -> None:
        """Send what is waiting (for at most `flush_s`), then close the HTTP clients."""
        try:
            deadline = asyncio.get_running_loop().time() + flush_s
            while self.buffer.pending() and asyncio.get_running_loop().time() < deadline:
                batch = self.buffer.take(self.cfg.max_message_chars)
                if batch is None:
                    break
                try:
                    await wait_for(self.bot.send_message(self.chat_id, batch.text), max(0.1, deadline - asyncio.get_running_loop().time()))
                except Exception:
                    break
        finally:
            try:
                await wait_for(self.bot.shutdown(), 5.0)  # closes the HTTP clients: bounded, it runs at stop
            except Exception:
                pass


class TelegramService:
    """What the daemon starts: the buffer attached to the root logger and the push task.

        tg = await TelegramService.for_daemon(cfg, store.pool)  # None when disabled / not configured
        ...
        if tg: await tg.aclose()     # on shutdown: sends what waits (<= 3 s), detaches
    """

    def __init__(self, push: TelegramPush, task: asyncio.Task[None]):
        self.push = push
        self.task = task

    @classmethod
    async def start(cls, cfg: Config, answer: Answerer | None = None) -> TelegramService | None:
        from bot.logs.setup import add_human_handler

        tc: TelegramConfig = cfg.telegram
        if not tc.enabled:
            return None
        s = cfg.secrets
        if not (s.telegram_token and s.telegram_chat_id):
            log.warning("telegram_not_configured",
                        text="telegram.enabled but BOT_TELEGRAM_TOKEN / BOT_TELEGRAM_CHAT_ID are not set: no push")  # fmt: skip
            return None
        push = TelegramPush(tc, s.telegram_token.get_secret_value(), s.telegram_chat_id.get_secret_value(), answer=answer)
        add_human_handler(push.buffer)
        task = asyncio.create_task(push.run(), name="telegram")
        return cls(push, task)

    @classmethod
    async def for_daemon(cls, cfg: Config, pool: Any) -> TelegramService | None:
        """`start` with the chat commands answered from the store behind `pool` and the log (and,
        once `attach_control` is called, the operator's commands: `bot.ops.control.telegram`)."""
        from pathlib import Path

        from bot.ops.chat.commands import Answers
        from bot.ops.control.telegram import ChatCommands

        answers = Answers(pool, mode=cfg.mode, symbols=cfg.symbols, log_path=Path(cfg.paths.logs_dir) / cfg.logging.json_file,
                          quote=cfg.exchange.quote)  # fmt: skip
        return await cls.start(cfg, ChatCommands(answers))

    def attach_control(self, controller: Any) -> None:
        """The daemon's controller, once it exists: the owner's control commands go to it, and
        messages from other chats are refused through it (recorded)."""
        router = self.push.answer
        if router is not None and hasattr(router, "controller"):
            router.controller = controller
            self.push.on_stranger = router.stranger

    async def aclose(self) -> None:
        logging.getLogger().removeHandler(self.push.buffer)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.push.aclose()
