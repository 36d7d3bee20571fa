# shellcheck shell=sh
# The system user of board/systemd/sip-capture.sysusers, made before the
# files are installed (what Fedora's %sysusers_create_compat does; the
# sysusers.d file itself is installed too, for systemd-sysusers later).
getent group sip-capture >/dev/null || groupadd -r sip-capture
getent passwd sip-capture >/dev/null || \
  useradd -r -g sip-capture -d /nonexistent -s /usr/sbin/nologin -c "sip-capture passive SIP sensor" sip-capture
exit 0
