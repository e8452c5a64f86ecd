"""The operator's command language, one for every interface (`bot ctl`, Telegram, the dashboard).

A command is a name and its arguments: `flatten`, `flatten SOLUSDT`, `/force_exit solusdt`,
`confirm 4821`. Telegram's command names allow only [a-z0-9_], so `force_exit` is the name
and `force-exit` (the CLI's spelling) is read as the same command. This module only parses
and describes; `bot.ops.control.controller` executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    name: str
    usage: str  # the arguments, e.g. "[SYMBOL]"
    help: str
    acts: bool = True  # changes something (False: read-only)
    min_args: int = 0
    max_args: int = 0


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("pause", "", "stop new entries (open positions keep their exits); survives a restart"),
    Spec("resume", "", "allow new entries again"),
    Spec("flatten", "[SYMBOL]", "close every open position (or SYMBOL's) at market now; asks to confirm", max_args=1),
    Spec("force_exit", "SYMBOL", "close one position at market now", min_args=1, max_args=1),
    Spec("retrain", "", "start a champion/challenger retrain now (one at a time)"),
    Spec("reload", "", "reload the risk section of the daemon's config file (validated first; a bad file changes nothing)"),
    Spec("confirm", "CODE", "confirm the command that asked for it", min_args=1, max_args=1),
    Spec("daily", "[DAYS]", "realised P&L per UTC day", acts=False, max_args=1),
    Spec("weekly", "[WEEKS]", "realised P&L per week", acts=False, max_args=1),
    Spec("performance", "", "realised P&L per symbol", acts=False),
    Spec("help", "", "this list", acts=False),
)}  # fmt: skip


def help_text(prefix: str = "") -> str:
    """One line per command (`prefix`: "/" for Telegram)."""
    return "\n".join(f"{prefix}{s.name}{(' ' + s.usage) if s.usage else ''}  {s.help}" for s in SPECS.values())


@dataclass(frozen=True)
class Parsed:
    name: str  # a key of SPECS, or the unknown word as typed (then `error` says so)
    args: list[str] = field(default_factory=list)
    error: str | None = None


def normalise_name(word: str) -> str:
    """`/Force-Exit@MyBot` -> `force_exit`."""
    return word.strip().lstrip("/").split("@", 1)[0].lower().replace("-", "_")


def parse(name: str, args: list[str] | tuple[str, ...] = ()) -> Parsed:
    """Check a command name and its argument count (values are checked by the controller)."""
    n = normalise_name(name)
    spec = SPECS.get(n)
    args = [str(a).strip() for a in args if str(a).strip()]
    if spec is None:
        return Parsed(n or "?", args, f"unknown command {name.strip()!r}; commands: {', '.join(SPECS)}")
    if not spec.min_args <= len(args) <= spec.max_args:
        want = f"{spec.name} {spec.usage}".strip()
        return Parsed(n, args, f"usage: {want}")
    return Parsed(n, args)


def parse_text(text: str) -> Parsed:
    """A chat message: `/flatten SOLUSDT`."""
    word, *args = text.split() or [""]
    return parse(word, args)


def norm_symbol(s: str) -> str:
    return s.strip().upper().replace("/", "")


def describe(name: str, args: list[str] | tuple[str, ...]) -> str:
    return " ".join([name, *args])
