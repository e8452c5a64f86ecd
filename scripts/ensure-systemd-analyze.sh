#!/bin/sh
# Makes sure `systemd-analyze` exists (Debian's `systemd` package): the tests verify the unit
# file with it. Does nothing when it is already there, so it is safe to run every time.
set -eu
if command -v systemd-analyze >/dev/null 2>&1; then exit 0; fi
echo "systemd-analyze not found; installing Debian's 'systemd' package" >&2
if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd
