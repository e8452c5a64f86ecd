"""The dashboard as an interface of the controller: `POST /api/control` behind a token.

Why a token although the page is on loopback only: any local process, and any web page open in
the user's browser, can reach 127.0.0.1. Reading the page is harmless; flattening the account
is not. So an acting request must carry the token (`Authorization: Bearer <token>`, a header
a cross-site form cannot send and a cross-site script cannot add without a CORS preflight,
which this server never grants). Missing: 401; wrong: 403; both recorded as refused, nothing
done. The token is random, created once in `paths.data_dir/dashboard.token` (mode 0600) and
kept across restarts; at start the daemon prints it on its terminal (not into the log files:
they are pushed to Telegram and kept for weeks) and logs where the file is. The page's control
panel asks for it once per browser tab (sessionStorage).

Body: `{"command": "flatten", "args": ["SOLUSDT"]}`; answer: `{"status", "text", "result"}`
(`status` "confirm": send `{"command": "confirm", "args": [result.code]}`; the panel asks with
the browser's confirm dialog).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("bot.ops.control")

TOKEN_FILE = "dashboard.token"
CONTROL_KEY: web.AppKey[Any] = web.AppKey("control", object)


def token_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / TOKEN_FILE


def load_or_create_token(path: Path) -> str:
    """The token in `path` (mode 0600), created on first use; a file others can read is
    replaced by a new token (the old one may have leaked)."""
    from bot.logs.setup import register_secret

    token = ""
    if path.exists():
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            log.warning("dashboard_token_replaced", file=str(path),
                        text=f"DASHBOARD token file {path} was readable by others: replaced by a new token")  # fmt: skip
            path.unlink()
        else:
            token = path.read_text().strip()
    if len(token) < 20:
        token = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    register_secret(token)  # masked in every log line, should it ever reach one
    return token


def announce(path: Path, token: str, url: str) -> None:
    log.info("dashboard_control", file=str(path),
             text=f"DASHBOARD controls at {url} need the token in {path} (mode 0600)")  # fmt: skip
    if sys.stderr.isatty():
        print(f"dashboard control token: {token} (also in {path})", file=sys.stderr)


def add_routes(app: web.Application, controller: Any, token: str) -> None:
    app[CONTROL_KEY] = (controller, token)
    app.router.add_post("/api/control", control)


async def control(request: web.Request) -> web.Response:
    controller, token = request.app[CONTROL_KEY]
    who = request.remote or "?"
    body: Any = None
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
    ok_body = isinstance(body, dict) and isinstance(body.get("command"), str) and isinstance(body.get("args", []), list)
    name = body["command"][:40] if ok_body else "?"
    args = [str(a)[:64] for a in body.get("args", [])][:4] if ok_body else []
    auth = request.headers.get("Authorization", "")
    given = auth[7:].strip() if auth.startswith("Bearer ") else ""
    if not given:
        await controller.refuse("dashboard", who, name, args, "no token")
        return _answer(401, "refused", f"a control request needs the token in {TOKEN_FILE} (Authorization: Bearer ...)")
    if not hmac.compare_digest(given.encode(), token.encode()):
        await controller.refuse("dashboard", who, name, args, "wrong token")
        return _answer(403, "refused", "wrong token: nothing done")
    if not ok_body:
        return _answer(400, "refused", 'send JSON {"command": "...", "args": [...]}: nothing done')
    ans = await controller.submit("dashboard", who, name, args)
    return _answer(200, ans.status, ans.text, ans.result)


def _answer(code: int, status: str, text: str, result: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"status": status, "text": text, "result": result or {}}, status=code,
                             headers={"Cache-Control": "no-store"})  # fmt: skip


PANEL = """
<section id="control"><h2>Control</h2>
<div class="ctl">
<input id="ctl-token" type="password" placeholder="token (dashboard.token in the data directory)" autocomplete="off">
<button data-cmd="pause">Pause entries</button><button data-cmd="resume">Resume</button>
<button data-cmd="flatten">Flatten all</button>
<input id="ctl-symbol" placeholder="SYMBOL" size="10"><button data-cmd="force_exit" data-sym="1">Force-exit</button>
<button data-cmd="flatten" data-sym="1">Flatten symbol</button>
<button data-cmd="retrain">Retrain now</button><button data-cmd="reload">Reload risk</button>
<button data-cmd="daily">Daily</button><button data-cmd="weekly">Weekly</button><button data-cmd="performance">Per symbol</button>
</div>
<pre id="ctl-answer"></pre></section>
<script>
(() => {
  const $ = id => document.getElementById(id);
  const tok = $('ctl-token');
  tok.value = sessionStorage.getItem('bot-token') || '';
  tok.addEventListener('change', () => sessionStorage.setItem('bot-token', tok.value));
  async function send(command, args) {
    const r = await fetch('api/control', {method: 'POST', cache: 'no-store',
      headers: {'Content-Type': 'application/json', 'Authorization': 'Bearer ' + tok.value},
      body: JSON.stringify({command, args})});
    return r.json();
  }
  document.querySelectorAll('#control button').forEach(b => b.addEventListener('click', async () => {
    const args = b.dataset.sym ? [$('ctl-symbol').value.trim()] : [];
    let a = await send(b.dataset.cmd, args);
    while (a.status === 'confirm' && window.confirm(a.text)) a = await send('confirm', [a.result.code]);
    $('ctl-answer').textContent = a.status === 'confirm' ? 'not confirmed: nothing done' : a.text;
  }));
})();
</script>
"""


def with_panel(page_html: str) -> str:
    """The dashboard page with the control panel at its end."""
    return page_html.replace("</body>", PANEL + "</body>", 1)
