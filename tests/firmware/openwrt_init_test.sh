#!/bin/sh
# The OpenWrt init script (board/openwrt/sip-capture/files/sip-capture.init)
# driven with stub UCI and procd functions: which command line it builds
# from /etc/config/sip-capture, and that the real agent accepts it.
# Needs the host build (target/debug/sip-capture).
# shellcheck disable=SC2034  # UCI_* are read through eval by the stubs
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
package=$root/board/openwrt/sip-capture
agent=$root/target/debug/sip-capture
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# UCI: option NAME of section 'main' is the shell variable UCI_NAME.
config_load() { [ "$1" = sip-capture ] || { echo "config_load: unexpected $1"; exit 1; }; }
config_get() { eval "$1=\${UCI_$3-}"; }
config_get_bool() {
	_value=
	eval "_value=\${UCI_$3-$4}"
	case $_value in 1|on|true|yes|enabled) eval "$1=1" ;; *) eval "$1=0" ;; esac
}
# procd: the instance's command, one argument per line, in $tmp/command;
# every procd call, with its arguments, in $tmp/procd.
procd_open_instance() { echo "open_instance $*" >> "$tmp/procd"; instances=$((instances + 1)); : > "$tmp/command"; }
procd_set_param() {
	echo "set_param $*" >> "$tmp/procd"
	_p=$1; shift; [ "$_p" != command ] || printf '%s\n' "$@" > "$tmp/command"
}
procd_append_param() {
	echo "append_param $*" >> "$tmp/procd"
	_p=$1; shift; [ "$_p" != command ] || printf '%s\n' "$@" >> "$tmp/command"
}
procd_close_instance() { echo "close_instance $*" >> "$tmp/procd"; }
procd_add_reload_trigger() { echo "reload_trigger $*" >> "$tmp/procd"; }

# The init script's first line (#!/bin/sh /etc/rc.common) is a comment here.
# shellcheck source=/dev/null
. "$package/files/sip-capture.init"

# Load a UCI file's 'option name value' lines of section main into UCI_*.
load_uci() {
	for var in $(set | sed -n 's/^\(UCI_[a-z_]*\)=.*/\1/p'); do unset "$var"; done
	eval "$(sed -n "s/^[[:space:]]*option[[:space:]]\{1,\}\([a-z_]*\)[[:space:]]\{1,\}\(.*\)$/UCI_\1=\2/p" "$1")"
}

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# 1. As shipped: disabled, so no procd call at all (no instance, no
#    command, no parameter). The same with every option set and enabled
#    0 or left out: the other options must not start anything.
load_uci "$package/files/sip-capture.config"
instances=0
: > "$tmp/procd"
start_service
[ "$instances" -eq 0 ] || fail "the shipped config (enabled 0) started an instance"
[ ! -s "$tmp/procd" ] || fail "disabled, but procd was called: $(cat "$tmp/procd")"
for enabled in 0 unset; do
	for option in $OPTIONS; do eval "UCI_$option=x"; done
	if [ "$enabled" = unset ]; then unset UCI_enabled; else UCI_enabled=$enabled; fi
	: > "$tmp/procd"
	start_service
	[ ! -s "$tmp/procd" ] || fail "enabled $enabled with every option set, procd was called: $(cat "$tmp/procd")"
done
load_uci "$package/files/sip-capture.config"

# 1b. The reload trigger: procd restarts the instance when
#     /etc/config/sip-capture changes (`uci commit sip-capture`, LuCI), so it
#     must name that file, which the package installs from sip-capture.config.
: > "$tmp/procd"
service_triggers
echo "reload_trigger sip-capture" | diff -u - "$tmp/procd" || fail "reload trigger (above)"
# shellcheck disable=SC2016  # the Makefile's text, not an expansion
grep -q 'INSTALL_CONF) ./files/sip-capture.config $(1)/etc/config/sip-capture$' "$package/Makefile" \
	|| fail "the Makefile does not install the UCI file as /etc/config/sip-capture"

# 2. Enabled: the shipped options become flags, in the order of OPTIONS;
#    empty options are left out; a filter with spaces and quotes stays one
#    argument.
UCI_enabled=1
UCI_sip_filter='(all (method invite bye) (from "alice@example.com"))'
instances=0
start_service
[ "$instances" -eq 1 ] || fail "enabled: $instances instances"
cat > "$tmp/expected" <<'ARGS'
/usr/bin/sip-capture
--config
/dev/null
--interface
br-lan
--sip-filter
(all (method invite bye) (from "alice@example.com"))
--broker
mqtt://192.168.1.10:1883
--topic
sip/capture
--log-level
info
--run-as-user
nobody
--capture-buffer-bytes
2097152
--queue-bytes
1048576
ARGS
diff -u "$tmp/expected" "$tmp/command" || fail "enabled: command line differs (above)"

# 3. The real agent accepts that command line (--check validates every
#    value and prints the effective keys; the interface is the host's lo).
sed -e "1s|.*|$agent|" -e 's/^br-lan$/lo/' "$tmp/command" > "$tmp/args"
set --
while IFS= read -r arg; do set -- "$@" "$arg"; done < "$tmp/args"
if "$@" --check > "$tmp/check" 2>&1; then
	grep -qx 'SIP_FILTER=(all (method invite bye) (from "alice@example.com"))' "$tmp/check" \
		|| fail "the agent did not get the filter as one value: $(grep SIP_FILTER "$tmp/check")"
	grep -qx 'RUN_AS_USER=nobody' "$tmp/check" || fail "RUN_AS_USER not passed"
else
	fail "the agent refused the command line: $(cat "$tmp/check")"
fi

# 3b. client_id empty (as shipped): the script passes no --client-id, and
#     the agent derives its own (src/identity.rs): on a router still named
#     OpenWrt, sip-capture-<hardware id>, the same id the images' script
#     gives (here br-lan is lo, virtual, so the first physical port's MAC).
#     Setting the hostname needs a UTS namespace (root).
! grep -qx -- --client-id "$tmp/command" || fail "an empty client_id was passed as --client-id"
if unshare -u true 2>/dev/null; then
	hardware_id=$(sh "$root/board/common/overlay/usr/sbin/sip-capture-hardware-id" lo) || hardware_id=
	client_id=$(unshare -u sh -c 'hostname OpenWrt && exec "$@" --check' sh "$@" | sed -n 's/^CLIENT_ID=//p')
	if [ -z "$hardware_id" ] || [ "$client_id" != "sip-capture-$hardware_id" ]; then
		fail "client_id empty on a router named OpenWrt: CLIENT_ID=$client_id, hardware id ${hardware_id:-none}"
	fi
else
	echo "openwrt init script: SKIPPED the derived CLIENT_ID (needs unshare -u: root)"
fi

# 4. OPTIONS names every agent key but READ_FILE, so no key is unreachable
#    from UCI (and none is misspelled).
"$agent" --config /dev/null --interface lo --topic t --check | sed -n 's/^\([A-Z_]*\)=.*/\1/p' \
	| tr '[:upper:]' '[:lower:]' | grep -vx read_file | sort > "$tmp/keys"
echo "$OPTIONS" | tr -s ' ' '\n' | grep -v '^$' | sort > "$tmp/options"
diff -u "$tmp/keys" "$tmp/options" || fail "OPTIONS and the agent's keys differ (above: - keys, + OPTIONS)"

if [ "$failures" -eq 0 ]; then
	echo "openwrt init script: ok (disabled starts nothing, reload trigger, enabled, agent accepts, derived CLIENT_ID, every key mapped)"
else
	exit 1
fi
