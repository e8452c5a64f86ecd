"""Render a page in Debian's headless Chromium: a DOM dump and a screenshot (report and dashboard tests).

`make test` installs Chromium first (`make chromium`); a missing browser fails the test with
that instruction instead of skipping it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

WIDTH = 1280

# Injected by tests only (the pages themselves carry no script for this): after load, write the
# bounding box of each target element, and its decoded image width if it is an <img>, into the DOM.
PROBE = """<script>
window.addEventListener('load', () => {
  for (const id of %s) {
    const el = document.getElementById(id);
    if (!el) { document.body.setAttribute('data-probe-' + id, 'missing'); continue; }
    const r = el.getBoundingClientRect();
    const nat = el.naturalWidth === undefined ? -1 : el.naturalWidth;
    document.body.setAttribute('data-probe-' + id, [r.left, r.top, r.width, r.height, nat].join(','));
  }
});
</script>"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium is not installed: run `make chromium` (Debian's chromium package)")


def _run(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="bot-chromium-") as profile:
        cmd = [
            chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-dev-shm-usage", "--no-first-run", "--force-device-scale-factor=1",
            f"--user-data-dir={profile}", *args,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(url: str, height: int, *, budget_ms: int | None = None) -> str:
    extra = [f"--virtual-time-budget={budget_ms}"] if budget_ms else []
    res = _run([f"--window-size={WIDTH},{height}", *extra, "--dump-dom", url])
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def screenshot(url: str, out: Path, height: int, *, budget_ms: int | None = None) -> np.ndarray:
    """Screenshot of the top `height` CSS pixels at WIDTH; returns the pixels as an (h, w, 3) array in [0, 1]."""
    import matplotlib.image as mpimg

    extra = [f"--virtual-time-budget={budget_ms}"] if budget_ms else []
    res = _run([f"--window-size={WIDTH},{height}", *extra, f"--screenshot={out}", url])
    assert res.returncode == 0 and out.is_file(), res.stderr[-2000:]
    img = mpimg.imread(out)
    return np.asarray(img[..., :3], dtype=np.float64)


def inject_probe(text: str, targets: list[str]) -> str:
    """The page's HTML with the bounding-box probe of the `targets` element ids injected."""
    import json

    assert "</body>" in text
    return text.replace("</body>", PROBE % json.dumps(targets) + "</body>", 1)


def with_probe(html_path: Path, target: str, out_path: Path) -> Path:
    """A copy of the page file with the probe of element `target` injected."""
    out_path.write_text(inject_probe(html_path.read_text(encoding="utf-8"), [target]), encoding="utf-8")
    return out_path


def probe_box(dom: str, target: str) -> tuple[int, int, int, int, int]:
    """(left, top, width, height, naturalWidth) of `target` as the probe wrote it into the DOM dump."""
    import re

    m = re.search(rf'data-probe-{re.escape(target)}="([^"]*)"', dom)
    assert m, "the probe did not run (page load never finished?)"
    assert m.group(1) != "missing", f"element #{target} not on the page"
    left, top, w, h, nat = (float(x) for x in m.group(1).split(","))
    return int(left), int(top), int(w), int(h), int(nat)


def color_share(pixels: np.ndarray, rgb_hex: str, tol: float = 0.12) -> float:
    """Share of pixels within `tol` (per channel, 0..1 scale) of a colour."""
    target = np.array([int(rgb_hex[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
    close = np.all(np.abs(pixels - target) <= tol, axis=-1)
    return float(close.mean())
