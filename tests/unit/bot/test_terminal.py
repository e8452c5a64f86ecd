"""Rich tables are not cut at 80 columns when the output is a pipe or a file."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.shared_data import ROOT

CODE = (
    "from rich.table import Table\n"
    "from bot.cli.terminal import console\n"
    "t = Table()\n"
    "for c in 'abcdefghij':\n"
    "    t.add_column('column_' + c)\n"
    "t.add_row(*[f'value_{i}_long' for i in range(10)])\n"
    "console().print(t)\n"
    "console(stderr=True).print(t)\n"
)


def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT, env={**base, **env})


def test_piped_tables_are_not_cut_at_80_columns() -> None:
    r = run({})
    for out in (r.stdout, r.stderr):
        assert all(f"value_{i}_long" in out for i in range(10)), out
        assert max(len(x) for x in out.splitlines()) > 80
        assert len(out.splitlines()) == 5  # one row: nothing wrapped


def test_columns_env_still_wins() -> None:
    r = run({"COLUMNS": "60"})
    assert max(len(x) for x in r.stdout.splitlines()) <= 60
