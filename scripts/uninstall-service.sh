#!/bin/sh
# Reverse scripts/install-service.sh (as root: `sudo make uninstall-service`): stop and disable
# the unit, remove it and the installed code. Data ($PREFIX/var), secrets ($ETC_DIR) and the
# service user are kept unless PURGE=1 (then they are removed too).
set -eu
PREFIX=${PREFIX:-/opt/cryptobot}
SERVICE_USER=${SERVICE_USER:-cryptobot}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
ETC_DIR=${ETC_DIR:-/etc/cryptobot}
PURGE=${PURGE:-0}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
SYSTEMD_RUN_DIR=${SYSTEMD_RUN_DIR:-/run/systemd/system}  # exists when systemd is the init system

if [ "$(id -u)" != "0" ]; then echo "uninstall-service: run as root (sudo make uninstall-service)" >&2; exit 1; fi
case "$PREFIX" in /*) ;; *) echo "uninstall-service: PREFIX must be an absolute path" >&2; exit 1;; esac
[ "$PREFIX" != "/" ] || { echo "uninstall-service: refusing PREFIX=/" >&2; exit 1; }

if [ -d "$SYSTEMD_RUN_DIR" ]; then
  "$SYSTEMCTL" disable --now cryptobot.service 2>/dev/null || true
fi
rm -f "$UNIT_DIR/cryptobot.service"
[ -d "$SYSTEMD_RUN_DIR" ] && "$SYSTEMCTL" daemon-reload || true

if [ -d "$PREFIX" ]; then
  find "$PREFIX" -mindepth 1 -maxdepth 1 ! -name var -exec rm -rf {} +
fi
if [ "$PURGE" = "1" ]; then
  rm -rf "$PREFIX" "$ETC_DIR"
  if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
  getent group "$SERVICE_USER" >/dev/null && groupdel "$SERVICE_USER" || true
  echo "removed cryptobot, its data, secrets and user $SERVICE_USER"
else
  rmdir "$PREFIX" 2>/dev/null || true
  echo "removed cryptobot; kept $PREFIX/var, $ETC_DIR and user $SERVICE_USER (PURGE=1 removes them)"
fi
