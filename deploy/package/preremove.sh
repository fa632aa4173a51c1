#!/bin/sh
# Stop the service before its files go away on removal (not on upgrade: deb passes "upgrade",
# rpm passes 1 when another version stays installed).
case "$1" in
upgrade | 1) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl disable --now toa-otel.service >/dev/null 2>&1 || true
fi
exit 0
