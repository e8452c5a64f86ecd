"""The owner's Telegram chat as an interface of the controller (`bot.ops.control.controller`).

`bot.ops.chat.push.TelegramPush` reads the chat by long polling and answers only the configured
chat id; this is its answerer in the daemon: the controller's commands (`/pause`, `/flatten`,
`/confirm 4821`, `/daily` ...) go to the controller, the read-only ones it had before
(`/status /positions /pnl /tail`) to `bot.ops.chat.commands.Answers`. A message from any other
chat is refused through the controller (recorded with that chat's id; nothing is done).

The owner is recorded as `owner chat`: the configured chat id is a secret and never written.
Until the daemon's controller exists (the first seconds of a start) control words get the
read-only help.
"""

from __future__ import annotations

from typing import Any

from bot.ops.control.commands import SPECS, help_text, normalise_name

OWNER = "owner chat"


class ChatCommands:
    """`await ChatCommands(answers)(command, args)` -> the reply text (see the module docstring)."""

    def __init__(self, answers: Any, controller: Any = None):
        self.answers = answers
        self.controller = controller

    async def __call__(self, command: str, args: list[str]) -> str:
        name = normalise_name(command)
        if self.controller is None or name not in SPECS:
            return await self.answers(command, args)
        if name == "help":
            return await self.answers("/help", []) + "\n" + help_text("/")
        ans = await self.controller.submit("telegram", OWNER, name, args)
        return ans.text

    async def stranger(self, chat_id: Any, text: str) -> None:
        """A message from a chat that is not the configured one."""
        if self.controller is None:
            return
        word, *args = (text or "").split() or [""]
        await self.controller.refuse("telegram", f"chat {chat_id}", normalise_name(word) or "?", args,
                                     "not the configured chat")  # fmt: skip
