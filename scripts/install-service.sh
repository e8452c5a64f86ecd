#!/bin/sh
# Install cryptobot as a systemd service (run as root from the repository: `sudo make install-service`).
#
#   1. creates the system user $SERVICE_USER (no login shell, home = $PREFIX) if it is missing;
#   2. copies the code to $PREFIX (root-owned, read-only to the service) and builds
#      $PREFIX/.venv with the package (no dev tools);
#   3. keeps an existing $PREFIX/config.yaml, else installs the default one;
#   4. creates $PREFIX/var (data, models, logs: the only directory the service may write)
#      owned by the service user, and $ETC_DIR/secrets.env (mode 0600, kept if present) for
#      BOT_API_KEY / BOT_API_SECRET / BOT_TELEGRAM_TOKEN / BOT_TELEGRAM_CHAT_ID;
#   5. writes $UNIT_DIR/cryptobot.service from systemd/cryptobot.service with these paths,
#      checks it with `systemd-analyze verify`, and enables it (START=1 also starts it).
# Re-running it upgrades the code in place and keeps config, data and secrets.
# Variables: PREFIX (/opt/cryptobot) SERVICE_USER (cryptobot) UNIT_DIR (/etc/systemd/system)
#            ETC_DIR (/etc/cryptobot) PYTHON (python3) START (0) SYSTEMCTL (systemctl)
#            SYSTEMD_RUN_DIR (/run/systemd/system: exists when systemd is the init system,
#            sd_booted(3)'s test; the test of this script points it at a directory of its own)
set -eu
PREFIX=${PREFIX:-/opt/cryptobot}
SERVICE_USER=${SERVICE_USER:-cryptobot}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
ETC_DIR=${ETC_DIR:-/etc/cryptobot}
PYTHON=${PYTHON:-python3}
START=${START:-0}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
SYSTEMD_RUN_DIR=${SYSTEMD_RUN_DIR:-/run/systemd/system}
SRC=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" != "0" ]; then echo "install-service: run as root (sudo make install-service)" >&2; exit 1; fi
case "$PREFIX" in /*) ;; *) echo "install-service: PREFIX must be an absolute path" >&2; exit 1;; esac

if ! getent passwd "$SERVICE_USER" >/dev/null; then
  echo "creating system user $SERVICE_USER"
  useradd --system --user-group --home-dir "$PREFIX" --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
fi

echo "installing code to $PREFIX"
mkdir -p "$PREFIX"
(cd "$SRC" && tar -c --exclude=./.venv --exclude=./var --exclude=./.git --exclude=./config.yaml \
   --exclude='*.pyc' --exclude=__pycache__ --exclude=./build --exclude='*.egg-info' --exclude=./.ci \
   --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude=./.hypothesis --exclude=./logs .) | tar -x -C "$PREFIX"
[ -f "$PREFIX/config.yaml" ] || cp "$SRC/config.yaml" "$PREFIX/config.yaml"
[ -x "$PREFIX/.venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet "$PREFIX"
rm -rf "$PREFIX/build" "$PREFIX"/*.egg-info
sh "$PREFIX/scripts/ensure-postgres.sh"

mkdir -p "$PREFIX/var/models" "$PREFIX/var/logs"
chown -R root:root "$PREFIX"
chown -R "$SERVICE_USER:$SERVICE_USER" "$PREFIX/var"
chmod 0750 "$PREFIX/var"

mkdir -p "$ETC_DIR"
chmod 0700 "$ETC_DIR"
if [ ! -f "$ETC_DIR/secrets.env" ]; then
  umask 077
  printf '# BOT_API_KEY=...\n# BOT_API_SECRET=...\n# BOT_TELEGRAM_TOKEN=...\n# BOT_TELEGRAM_CHAT_ID=...\n' > "$ETC_DIR/secrets.env"
fi
chmod 0600 "$ETC_DIR/secrets.env"

mkdir -p "$UNIT_DIR"
sed -e "s#/opt/cryptobot#$PREFIX#g" -e "s#/etc/cryptobot#$ETC_DIR#g" \
    -e "s#^User=.*#User=$SERVICE_USER#" -e "s#^Group=.*#Group=$SERVICE_USER#" \
    "$SRC/systemd/cryptobot.service" > "$UNIT_DIR/cryptobot.service"
chmod 0644 "$UNIT_DIR/cryptobot.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  out=$(systemd-analyze verify "$UNIT_DIR/cryptobot.service" 2>&1) || { echo "$out" >&2; exit 1; }
  [ -z "$out" ] || { echo "$out" >&2; exit 1; }
fi

if [ -d "$SYSTEMD_RUN_DIR" ]; then
  "$SYSTEMCTL" daemon-reload
  "$SYSTEMCTL" enable cryptobot.service
  [ "$START" = "1" ] && "$SYSTEMCTL" restart cryptobot.service
  echo "installed and enabled: systemctl start cryptobot; journalctl -u cryptobot -f; $PREFIX/.venv/bin/bot --config $PREFIX/config.yaml tail -f"
else
  echo "installed to $PREFIX; systemd is not running here, so the unit was not enabled" >&2
fi
