# shellcheck shell=sh
# After an upgrade, restart a running service on the new binary
# (%systemd_postun_with_restart).
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || :
  if [ "$1" -ge 1 ]; then systemctl try-restart sip-capture.service >/dev/null 2>&1 || :; fi
fi
