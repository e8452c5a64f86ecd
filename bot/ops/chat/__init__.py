"""Telegram: the daemon's short lines pushed to one chat, and the owner's chat commands.

`config` is the schema of the `telegram:` config section (imported by `bot.config`, so it stays
free of the client library); `push` batches and rate-limits the lines; `commands` answers the
owner's `/status`, `/positions`, `/pnl`, `/tail` from the store.
"""
