#!/bin/sh
# Makes sure a headless-capable Chromium exists (Debian's `chromium` package): the report and
# dashboard tests render their HTML in it and look at a screenshot. Quick when already there.
set -eu
for c in chromium chromium-browser; do
  if command -v "$c" >/dev/null 2>&1; then exit 0; fi
done
if [ -n "${BOT_CHROMIUM:-}" ] && [ -x "$BOT_CHROMIUM" ]; then exit 0; fi

echo "chromium not found; installing Debian's 'chromium' package" >&2
if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
