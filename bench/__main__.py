"""Run every benchmark module (`bench/bench_*.py`) in its own process, or only those named:
`python -m bench [name ...]`. Separate processes keep one benchmark's memory from another's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    mods = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if argv:
        mods = [m for m in mods if any(a in m for a in argv)]
    failed = []
    for m in mods:
        print(f"== {m}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{m}"], cwd=HERE.parent)
        if rc != 0:
            failed.append(m)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
