#!/bin/sh
# Makes sure PostgreSQL server binaries (initdb, pg_ctl, postgres) exist on this machine.
# Uses Debian/Ubuntu's `postgresql` package. The package's own cluster is not used: the bot
# and the tests start private clusters on unix sockets under their own directories.
set -eu
for d in /usr/lib/postgresql/*/bin; do
  if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then exit 0; fi
done
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then exit 0; fi
if [ -n "${BOT_PG_BIN:-}" ] && [ -x "$BOT_PG_BIN/initdb" ]; then exit 0; fi

echo "PostgreSQL server binaries not found; installing Debian's 'postgresql' package" >&2
if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
# Do not let the package create and start its own 'main' cluster: we never use it.
$SUDO mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/bot-no-main.conf >/dev/null
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
