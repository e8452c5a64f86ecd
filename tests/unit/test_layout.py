"""Package boundaries: dependencies point one way.

- `models/` and `risk/` never import `bot/`; `risk/` does not import `models/` either.
- `bot/engine/` is the pure trading logic (the same for the live daemon and the backtest): it
  imports no I/O library, no clock, and nothing of `bot/` outside `bot.engine`. Brokers, the
  live loop, the store and the scheduler are adapters around it, never inside it.

The checks read the import statements (any depth: imports inside functions count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.shared_data import ROOT

# What the engine may not import: network, database, processes/threads, scheduling, logging
# (it returns records; the adapters log them), and the clock (it is told the time).
ENGINE_FORBIDDEN = frozenset({
    "asyncio", "ccxt", "aiohttp", "websockets", "requests", "urllib", "http", "socket", "ssl",
    "asyncpg", "psycopg", "psycopg2", "sqlalchemy", "optuna",
    "subprocess", "multiprocessing", "concurrent", "threading", "signal",
    "apscheduler", "structlog", "logging",
    "time", "datetime",
})  # fmt: skip


def _package_of(path: Path) -> list[str]:
    """bot/engine/x.py and bot/engine/__init__.py both belong to ["bot", "engine"]."""
    return list(path.relative_to(ROOT).parts[:-1])


def _imported_modules(path: Path, package: list[str] | None = None) -> set[str]:
    """Dotted names a module imports: `import a.b` -> a.b; `from a import b` -> a, a.b;
    relative imports are resolved against the file's package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path) if package is None else package
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


def _imports(path: Path) -> set[str]:
    """Top-level packages a module imports."""
    return {m.split(".")[0] for m in _imported_modules(path)}


def _engine_offences(path: Path, package: list[str] | None = None) -> list[str]:
    bad = []
    for m in sorted(_imported_modules(path, package)):
        top = m.split(".")[0]
        if top in ENGINE_FORBIDDEN:
            bad.append(f"{path.name}: {m} (I/O or clock)")
        elif top == "bot" and m != "bot" and not (m == "bot.engine" or m.startswith("bot.engine.")):
            bad.append(f"{path.name}: {m} (bot/ outside bot.engine)")
    return bad


def test_models_and_risk_never_import_bot() -> None:
    offenders = []
    for pkg in ("models", "risk"):
        files = sorted((ROOT / pkg).rglob("*.py"))
        assert files, f"{pkg}/ has no modules"
        offenders += [str(f.relative_to(ROOT)) for f in files if "bot" in _imports(f)]
    assert offenders == []


def test_risk_does_not_depend_on_models() -> None:
    offenders = [str(f.relative_to(ROOT)) for f in sorted((ROOT / "risk").rglob("*.py")) if "models" in _imports(f)]
    assert offenders == []


def test_engine_imports_no_io_and_nothing_else_of_bot() -> None:
    files = sorted((ROOT / "bot" / "engine").rglob("*.py"))
    assert files, "bot/engine/ has no modules"
    offences = [o for f in files for o in _engine_offences(f)]
    assert offences == []


def test_the_engine_check_catches_what_it_should(tmp_path: Path) -> None:
    """The checker itself: planted offences in a module read as part of bot.engine are found."""
    probe = tmp_path / "_layout_probe.py"
    probe.write_text(
        "import numpy as np\n"
        "from models.timeutil import MINUTE_MS\n"
        "from bot.engine.records import Fill\n"
        "from . import records\n"
        "def f():\n"
        "    import asyncio\n"
        "    from time import monotonic\n"
        "    from bot.store import db\n"
        "    from ..marketdata import feed\n"
        "    from bot import daemon\n"
    )
    assert _engine_offences(probe, ["bot", "engine"]) == [
        "_layout_probe.py: asyncio (I/O or clock)",
        "_layout_probe.py: bot.daemon (bot/ outside bot.engine)",
        "_layout_probe.py: bot.marketdata (bot/ outside bot.engine)",
        "_layout_probe.py: bot.marketdata.feed (bot/ outside bot.engine)",
        "_layout_probe.py: bot.store (bot/ outside bot.engine)",
        "_layout_probe.py: bot.store.db (bot/ outside bot.engine)",
        "_layout_probe.py: time (I/O or clock)",
        "_layout_probe.py: time.monotonic (I/O or clock)",
    ]


def test_risk_time_units_equal_the_time_helper() -> None:
    """risk keeps its own copy of the units (it may not import models/); they must agree."""
    import risk.limits
    from models import timeutil

    assert (risk.limits.MINUTE_MS, risk.limits.DAY_MS) == (timeutil.MINUTE_MS, timeutil.DAY_MS)
