# shellcheck shell=sh
# Tell a running systemd about the unit (%systemd_post). The service is not
# enabled: it starts once the configuration is right (docs/deployment.md).
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
