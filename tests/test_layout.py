"""Package boundaries: `models/` and `risk/` never import `bot/` (dependencies point one way)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


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


def test_risk_time_units_equal_the_time_helper() -> None:
    """risk keeps its own copy of the units (it may not import models/); they must agree."""
    import risk.limits
    from models import timeutil

    assert (risk.limits.MINUTE_MS, risk.limits.DAY_MS) == (timeutil.MINUTE_MS, timeutil.DAY_MS)
