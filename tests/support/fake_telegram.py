"""A local fake of the Telegram Bot API (aiohttp) that records what it receives.

Serves `/bot<token>/<method>` for getMe, sendMessage and getUpdates (long polling), and can be
told to be slow (`delay_s`), to fail (`fail_status`, e.g. 500) or to rate-limit (`retry_after`).
Only the wrong token is refused (401), like the real API.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Sent:
    at: float  # time.monotonic() when the request arrived
    chat_id: str
    text: str


@dataclass
class FakeTelegram:
    token: str
    delay_s: float = 0.0
    fail_status: int | None = None
    retry_after: int | None = None
    sent: list[Sent] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _next_update: int = 100
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def user_sends(self, chat_id: int, text: str) -> None:
        """A message from a chat to the bot, delivered by the next getUpdates."""
        self._next_update += 1
        self._updates.append({
            "update_id": self._next_update,
            "message": {
                "message_id": self._next_update, "date": int(time.time()), "text": text,
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": chat_id, "is_bot": False, "first_name": "user"},
            },
        })  # fmt: skip

    def texts(self, chat_id: str | None = None) -> list[str]:
        return [s.text for s in self.sent if chat_id is None or s.chat_id == str(chat_id)]

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        out: dict[str, Any] = {}
        for k, v in form.items():
            try:
                out[k] = json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v
            except ValueError:
                out[k] = v
        return out

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        method = request.match_info["method"].lower()
        self.requests.append(method)
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        params = await self._params(request)
        if method == "getme":
            return _ok({"id": 42, "is_bot": True, "first_name": "fake", "username": "fake_bot"})
        if method == "getupdates":
            offset = int(params.get("offset") or 0)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            wait = min(float(params.get("timeout") or 0), 1.0)
            deadline = time.monotonic() + wait
            while not self._updates and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return _ok(self._updates[:100])
        if method == "sendmessage":
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.retry_after:
                return web.json_response(
                    {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {self.retry_after}",
                     "parameters": {"retry_after": self.retry_after}}, status=429)  # fmt: skip
            if self.fail_status:
                return web.json_response({"ok": False, "error_code": self.fail_status, "description": "Internal Server Error"},
                                         status=self.fail_status)  # fmt: skip
            chat = str(params.get("chat_id"))
            self.sent.append(Sent(arrived, chat, str(params.get("text"))))
            return _ok({"message_id": len(self.sent), "date": int(time.time()), "text": params.get("text"),
                        "chat": {"id": int(chat), "type": "private"}})  # fmt: skip
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})
